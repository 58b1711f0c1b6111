"""`vla virtual-arm` as a user runs it, and the rule that the servo side never imports torch."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from vla.hardware.robots import SO101Follower


def test_drivers_and_virtual_arm_do_not_import_torch() -> None:
    code = ("import sys, vla.hardware.robots, vla.hardware.virtual.arm, vla.hardware.cli, vla.hardware.safety; "
            "sys.exit('torch' in sys.modules)")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_vla_virtual_arm_command(tmp_path: Path) -> None:
    vla = str(Path(sys.executable).with_name("vla"))
    link = tmp_path / "arm"
    proc = subprocess.Popen([vla, "virtual-arm", "--robot", "so101", "--twin", "motor", "--link", str(link),
                             "--calibration-dir", str(tmp_path)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(4)]
    assert lines[0].startswith(f"virtual so101 follower on {link}")
    calibration = Path(re.search(r"calibration: (\S+)", lines[1]).group(1))  # type: ignore[union-attr]
    assert calibration == tmp_path / "virtual_so101_follower.json" and "--robot.type=vla_so101_follower" in lines[2]
    with SO101Follower(str(link), calibration_path=calibration) as follower:  # the symlink is a usable port
        assert set(follower.get_observation()) == {f"{m}.pos" for m in follower.spec.motors}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert not link.exists()


def test_bad_fault_spec_is_a_clear_error() -> None:
    vla = str(Path(sys.executable).with_name("vla"))
    proc = subprocess.run([vla, "virtual-arm", "--fault", "melt=1"], capture_output=True, text=True)
    assert proc.returncode != 0 and "bad fault 'melt=1'" in proc.stderr
