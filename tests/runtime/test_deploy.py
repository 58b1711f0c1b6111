"""`vla deploy` as a user runs it, on the virtual SO-101 with a virtual leader: teleoperation, a key hands over to
the policy, the run is recorded as a LeRobot dataset with the source of every action, and plotted."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest


@pytest.mark.slow
def test_vla_deploy_virtual_teleop_then_policy_recorded(tmp_path: Path) -> None:
    from lerobot.datasets import LeRobotDataset

    from vla.envs.tasks import Reach

    vla = str(Path(sys.executable).with_name("vla"))
    cmd = [vla, "deploy", "--robot", "virtual", "--policy", "scripted", "--teleop", "virtual", "--duration", "5",
           "--record", str(tmp_path / "run"), "--plot", str(tmp_path / "run.png"), "--no-realtime",
           "--max-step", "5"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    lines = []
    for line in proc.stdout:  # wait until the loop runs, let the operator drive a while, then hand over
        lines.append(line)
        if line.startswith("keys"):
            break
    time.sleep(2.0)
    proc.stdin.write("p\n")
    proc.stdin.flush()
    out, _ = proc.communicate(timeout=120)
    lines.append(out)
    text = "".join(lines)
    assert proc.returncode == 0, text[-3000:]
    assert "stopped (duration) after 150 ticks" in text and "control -> policy" in text
    assert (tmp_path / "run.png").stat().st_size > 10_000

    ds = LeRobotDataset("local/interventions", root=tmp_path / "run")
    assert ds.meta.total_episodes == 1 and ds.meta.total_frames == 150
    sources = np.array([int(ds[i]["control_source"]) for i in range(0, 150, 5)])
    assert sources[0] == 1 and 0 in sources  # the operator first, the policy after the key
    assert ds.meta.features["control_source"]["dtype"] == "int64"
    item = ds[100]
    assert item["observation.images.front"].shape == (3, 96, 96) and item["action"].shape == (6,)
    assert item["task"] in Reach.phrasings  # the twin's scene chose the instruction
