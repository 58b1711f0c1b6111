"""LeRobot 0.6.1's deployment command drives a trained checkpoint of ours on a virtual SO-101 with real-time
chunking: `lerobot-rollout --inference.type=rtc` with our follower type and two test-pattern cameras."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_lerobot_rollout_with_rtc_drives_the_virtual_arm(virtual_arm, so101_checkpoint: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ckpt = so101_checkpoint
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    follower = virtual_arm("so101")
    (tmp_path / "robot").mkdir()
    shutil.copy(follower.calibration_path, tmp_path / "robot" / "virtual.json")
    rest = np.degrees(follower.joint_positions())
    cameras = "{front: {type: vla_test_pattern, width: 32, height: 32}, wrist: {type: vla_test_pattern, width: 32, " \
              "height: 32}}"
    rollout = [
        str(BIN / "lerobot-rollout"), "--robot.type=vla_so101_follower", f"--robot.port={follower.port}",
        "--robot.id=virtual", f"--robot.calibration_dir={tmp_path / 'robot'}", f"--robot.cameras={cameras}",
        f"--policy.path={ckpt}", "--policy.device=cpu", "--inference.type=rtc", "--inference.rtc.execution_horizon=5",
        "--task=touch the red dot", "--duration=6", "--fps=30", "--play_sounds=false",
        "--return_to_initial_position=false",
    ]  # fmt: skip
    proc = subprocess.run(rollout, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "RTC inference error" not in out and "Fatal error in RTC thread" not in out, out[-5000:]
    moved = np.abs(np.degrees(follower.joint_positions()) - rest).max()
    assert moved > 2.0, (moved, out[-3000:])  # the policy's chunks reached the servos
