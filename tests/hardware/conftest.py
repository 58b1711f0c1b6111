"""Virtual arms on pseudo-terminals, stopped after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from vla.hardware.virtual.arm import VirtualArm


@pytest.fixture
def virtual_arm(tmp_path) -> Iterator[Callable[..., VirtualArm]]:
    arms: list[VirtualArm] = []

    def start(robot: str = "so101", role: str = "follower", **kwargs) -> VirtualArm:
        arm = VirtualArm(robot, role, calibration_dir=tmp_path, **kwargs).start()
        arms.append(arm)
        return arm

    yield start
    for arm in arms:
        arm.stop()
