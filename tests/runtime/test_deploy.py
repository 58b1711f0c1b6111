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


@pytest.mark.slow
def test_vla_deploy_with_a_trained_checkpoint_and_640x480_cameras(virtual_arm, so101_checkpoint: Path,
                                                                   tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Real cameras are 640x480; the checkpoint was trained on 32x32 frames. Locally and through `vla serve`, the
    deployment resizes the frames to the checkpoint's sizes before they reach the policy, says so once, and runs."""
    from runtime_helpers import spawn_server

    follower = virtual_arm("so101")
    vla = str(Path(sys.executable).with_name("vla"))
    base = [vla, "deploy", "--robot", "so101", "--port", follower.port, "--calibration",
            str(follower.calibration_path), "--camera", "front=test-pattern:640x480", "--camera",
            "wrist=test-pattern:640x480", "--start", "policy", "--duration", "8", "--no-realtime",
            "--task", "touch the red dot"]  # fmt: skip
    server, url = spawn_server("--policy", str(so101_checkpoint), "--port", "0", log=tmp_path / "server.log",
                               timeout=120)  # fmt: skip
    try:
        for where in (["--policy", str(so101_checkpoint)], ["--server", url]):
            proc = subprocess.run([*base, *where], capture_output=True, text=True, timeout=300,
                                  stdin=subprocess.DEVNULL)  # fmt: skip
            text = proc.stdout + proc.stderr
            assert proc.returncode == 0, (where, text[-3000:])
            assert "camera front: 640x480 frames resized to the policy's 32x32" in text, text[-3000:]
            assert "inference failed" not in text, text[-3000:]
            chunks = int(text.split("; chunks ")[1].split()[0])
            assert chunks >= 3, text[-3000:]  # the first chunk loads lazily; then one every few ticks
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_vla_deploy_refuses_cameras_the_policy_does_not_know(virtual_arm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A policy that does not match the robot's cameras is refused at start, with the names."""
    follower = virtual_arm("so101")
    vla = str(Path(sys.executable).with_name("vla"))
    cmd = [vla, "deploy", "--robot", "so101", "--port", follower.port, "--calibration", str(follower.calibration_path),
           "--camera", "top=test-pattern:64x48", "--policy", "scripted", "--duration", "2", "--no-realtime"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "missing ['front', 'wrist'], unknown ['top']" in text, text[-2000:]



@pytest.mark.slow
def test_vla_deploy_on_the_virtual_arm_films_the_cameras_the_checkpoint_was_trained_on(tmp_path: Path) -> None:
    """A policy recorded with `--cameras close,wrist` at 40x48 runs on the virtual arm: its twin renders those two
    views at that size (the default front and wrist would be refused as cameras the policy does not know)."""
    import torch
    from lerobot.configs import FeatureType, PolicyFeature

    from vla.policies.configuration_vla import VLAConfig
    from vla.policies.modeling_vla import VLAPolicy
    from vla.policies.processor_vla import make_vla_pre_post_processors

    cfg = VLAConfig(preset="tiny", chunk_size=8, n_action_steps=8, num_steps=1, tokenizer_max_length=48, device="cpu",
                    push_to_hub=False)  # fmt: skip
    cameras = ("close", "wrist")
    cfg.input_features = {f"observation.images.{c}": PolicyFeature(type=FeatureType.VISUAL, shape=(3, 40, 48))
                          for c in cameras}  # fmt: skip
    cfg.input_features["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(6,))
    cfg.output_features = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(6,))}
    stats = {k: {"mean": torch.full((6,), 20.0), "std": torch.full((6,), 30.0)}
             for k in ("observation.state", "action")}  # fmt: skip
    for cam in cameras:
        stats[f"observation.images.{cam}"] = {"mean": torch.full((3, 1, 1), 0.5), "std": torch.full((3, 1, 1), 0.25)}
    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt"
    for part in (VLAPolicy(cfg), *make_vla_pre_post_processors(cfg, dataset_stats=stats)):
        part.save_pretrained(ckpt)
    vla = str(Path(sys.executable).with_name("vla"))
    cmd = [vla, "deploy", "--robot", "virtual", "--policy", str(ckpt), "--start", "policy", "--duration", "3",
           "--no-realtime", "--record", str(tmp_path / "run")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "resized" not in text and "inference failed" not in text, text[-3000:]
    from lerobot.datasets import LeRobotDataset

    ds = LeRobotDataset("local/interventions", root=tmp_path / "run")
    assert sorted(ds.meta.camera_keys) == ["observation.images.close", "observation.images.wrist"]
    assert ds[0]["observation.images.close"].shape == (3, 40, 48)
