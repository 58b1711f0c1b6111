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
