"""Shared fixtures. Everything is built offline: tiny model configs, generated datasets."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from vla.hardware.virtual.arm import VirtualArm

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def video_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LeRobot v3 dataset with video storage: 4 episodes of 20 frames, one 32x32 camera, 2-D state/action."""
    from vla.datasets.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data") / "synthetic", episodes=4, length=20, image_size=32)


@pytest.fixture(scope="session")
def so101_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained `tiny` checkpoint of the SO-101 reach task (2 recorded episodes, front and wrist cameras at 32x32,
    2 steps of `vla train`): the real thing, trained once per test run, for end-to-end deployment tests."""
    import subprocess
    import sys

    from vla.envs.collect import record

    root = tmp_path_factory.mktemp("so101_ckpt")
    record("so101/reach", 2, root / "data", image_size=(32, 32), progress=False)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    train = [
        str(Path(sys.executable).with_name("vla")), "train", "--policy.type=vla", "--policy.preset=tiny",
        "--policy.chunk_size=10", "--policy.n_action_steps=10", "--policy.num_steps=2", "--policy.push_to_hub=false",
        "--policy.device=cpu", "--dataset.repo_id=local/so101_reach", f"--dataset.root={root / 'data'}",
        f"--output_dir={root / 'train'}", "--steps=2", "--save_freq=2", "--batch_size=4", "--num_workers=0",
        "--wandb.enable=false", "--env_eval_freq=0",
    ]  # fmt: skip
    proc = subprocess.run(train, env=env, capture_output=True, text=True, timeout=600, cwd=root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root / "train" / "checkpoints" / "last" / "pretrained_model"


@pytest.fixture
def virtual_arm(tmp_path: Path) -> Iterator[Callable[..., VirtualArm]]:
    """virtual_arm(robot, role, **kwargs): a started virtual arm on a pseudo-terminal, stopped after the test."""
    from vla.hardware.virtual.arm import VirtualArm

    arms: list[VirtualArm] = []

    def start(robot: str = "so101", role: str = "follower", **kwargs) -> VirtualArm:
        arm = VirtualArm(robot, role, calibration_dir=tmp_path, **kwargs).start()
        arms.append(arm)
        return arm

    yield start
    for arm in arms:
        arm.stop()
