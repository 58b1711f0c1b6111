"""The arms we drive, as data: which servo is which joint, in which units, and where calibrations live.

Joint names, servo ids and models match LeRobot 0.4.4's SO-101 and Koch classes, so calibration files and recorded
datasets carry over. Units: body joints in degrees, gripper 0-100. (LeRobot's Koch leader reports its body joints
in -100..100 instead; ours uses degrees on both sides so that leader and follower values mean the same.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vla.hardware.calibration import NormMode, lerobot_calibration_dir
from vla.hardware.motors import Motor

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")


@dataclass(frozen=True)
class ArmSpec:
    name: str  # "so101" | "koch"
    role: str  # "follower" | "leader"
    motors: dict[str, Motor]
    calibration_name: str  # LeRobot's directory: robots/so_follower, teleoperators/so_leader, ...

    @property
    def vendor(self) -> str:
        return "feetech" if self.motors["gripper"].model.startswith("sts") else "dynamixel"

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f"{m}.pos" for m in self.motors)

    def calibration_path(self, arm_id: str, directory: Path | None = None) -> Path:
        kind = "robots" if self.role == "follower" else "teleoperators"
        return (directory or lerobot_calibration_dir() / kind / self.calibration_name) / f"{arm_id}.json"


def _motors(models: tuple[str, ...]) -> dict[str, Motor]:
    return {
        joint: Motor(i + 1, servo, NormMode.RANGE_0_100 if joint == "gripper" else NormMode.DEGREES)
        for i, (joint, servo) in enumerate(zip(JOINTS, models, strict=True))
    }


ARMS: dict[tuple[str, str], ArmSpec] = {
    ("so101", "follower"): ArmSpec("so101", "follower", _motors(("sts3215",) * 6), "so_follower"),
    ("so101", "leader"): ArmSpec("so101", "leader", _motors(("sts3215",) * 6), "so_leader"),
    ("koch", "follower"): ArmSpec(
        "koch", "follower", _motors(("xl430-w250",) * 2 + ("xl330-m288",) * 4), "koch_follower"
    ),
    ("koch", "leader"): ArmSpec("koch", "leader", _motors(("xl330-m077",) * 6), "koch_leader"),
}


def arm_spec(name: str, role: str) -> ArmSpec:
    try:
        return ARMS[(name, role)]
    except KeyError:
        raise ValueError(f"unknown arm '{name}' {role}; known: {sorted({a for a, _ in ARMS})}") from None
