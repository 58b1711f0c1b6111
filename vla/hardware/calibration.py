"""Calibration in LeRobot's format, and the conversion between encoder ticks and the units LeRobot uses.

A calibration file is JSON, one entry per motor: `{"shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset":
-1024, "range_min": 800, "range_max": 3300}, ...}`, stored where LeRobot stores it
(`$HF_LEROBOT_CALIBRATION/robots/so_follower/<id>.json` for an SO-101 follower calibrated with `lerobot-calibrate
--robot.type=so101_follower`), so an arm calibrated with either stack works with the other.

Units (LeRobot 0.4.4's formulas, so datasets and policies agree):
- `degrees`: (ticks - mid) * 360 / (resolution - 1), mid = (range_min + range_max) / 2;
- `range_0_100`: (ticks - range_min) / (range_max - range_min) * 100, mirrored when drive_mode is set;
- `range_m100_100`: the same over [-100, 100].
Ticks are clamped into [range_min, range_max] for the two range modes, not for degrees.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from vla.files import write_json_atomic


class NormMode(StrEnum):
    DEGREES = "degrees"
    RANGE_0_100 = "range_0_100"
    RANGE_M100_100 = "range_m100_100"


@dataclass(frozen=True)
class MotorCalibration:
    id: int
    drive_mode: int
    homing_offset: int
    range_min: int
    range_max: int


def lerobot_calibration_dir() -> Path:
    """Where LeRobot keeps calibration files (same environment variables and defaults as LeRobot 0.4.4)."""
    if os.getenv("HF_LEROBOT_CALIBRATION"):
        return Path(os.environ["HF_LEROBOT_CALIBRATION"]).expanduser()
    if os.getenv("HF_LEROBOT_HOME"):
        return Path(os.environ["HF_LEROBOT_HOME"]).expanduser() / "calibration"
    hf_home = os.getenv("HF_HOME") or str(Path(os.getenv("XDG_CACHE_HOME", "~/.cache")) / "huggingface")
    return Path(hf_home).expanduser() / "lerobot" / "calibration"


def load_calibration(path: str | Path) -> dict[str, MotorCalibration]:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no calibration file at {path}; calibrate the arm first (`lerobot-calibrate` or "
                                "`vla calibrate`)") from None  # fmt: skip
    except json.JSONDecodeError as err:
        raise ValueError(f"calibration file {path} is not valid JSON: {err}") from None
    fields = set(MotorCalibration.__dataclass_fields__)
    out = {}
    for motor, entry in raw.items():
        if not isinstance(entry, dict) or set(entry) != fields:
            raise ValueError(f"calibration file {path}: entry '{motor}' must have exactly the fields {sorted(fields)}")
        out[motor] = MotorCalibration(**{k: int(v) for k, v in entry.items()})
    return out


def save_calibration(calibration: dict[str, MotorCalibration], path: str | Path) -> None:
    write_json_atomic(path, {m: asdict(c) for m, c in calibration.items()}, indent=4)  # never half written


def to_units(ticks: int, cal: MotorCalibration, mode: NormMode, resolution: int, drive_mode: bool) -> float:
    lo, hi = cal.range_min, cal.range_max
    if hi == lo:
        raise ValueError(f"calibration of motor id {cal.id} has range_min == range_max == {lo}; recalibrate")
    if mode is NormMode.DEGREES:
        return (ticks - (lo + hi) / 2) * 360.0 / (resolution - 1)
    fraction = (min(hi, max(lo, ticks)) - lo) / (hi - lo)
    if mode is NormMode.RANGE_0_100:
        value = fraction * 100.0
        return 100.0 - value if drive_mode and cal.drive_mode else value
    value = fraction * 200.0 - 100.0
    return -value if drive_mode and cal.drive_mode else value


def to_ticks(value: float, cal: MotorCalibration, mode: NormMode, resolution: int, drive_mode: bool) -> int:
    lo, hi = cal.range_min, cal.range_max
    if mode is NormMode.DEGREES:
        return round(value * (resolution - 1) / 360.0 + (lo + hi) / 2)
    if mode is NormMode.RANGE_0_100:
        fraction = (100.0 - value if drive_mode and cal.drive_mode else value) / 100.0
    else:
        fraction = ((-value if drive_mode and cal.drive_mode else value) + 100.0) / 200.0
    return round(lo + min(1.0, max(0.0, fraction)) * (hi - lo))
