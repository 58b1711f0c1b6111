"""LeRobot config types of our arms: `vla_so101_follower`, `vla_koch_follower`, `vla_so101_leader`,
`vla_koch_leader`, and the `vla_test_pattern` camera (LeRobot finds each device class beside its config's package by
name: `<Name>Config` -> `<Name>`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lerobot.cameras import CameraConfig
from lerobot.robots import RobotConfig
from lerobot.teleoperators import TeleoperatorConfig


@CameraConfig.register_subclass("vla_test_pattern")
@dataclass(kw_only=True)
class VLATestPatternCameraConfig(CameraConfig):
    """A camera without hardware (`vla.hardware.pattern`), for dry runs of LeRobot's commands on virtual arms."""

    fps: int | None = 30
    width: int | None = 640
    height: int | None = 480


@dataclass(kw_only=True)
class _FollowerConfig(RobotConfig):
    port: str
    on_exit: str = "hold"  # "hold": torque on at the last pose; "release": torque off
    max_step: float | None = 10.0  # joint units per action
    max_velocity: float | None = 180.0  # joint units per second
    cameras: dict[str, CameraConfig] = field(default_factory=dict)


@RobotConfig.register_subclass("vla_so101_follower")
@dataclass(kw_only=True)
class VLASO101FollowerConfig(_FollowerConfig):
    pass


@RobotConfig.register_subclass("vla_koch_follower")
@dataclass(kw_only=True)
class VLAKochFollowerConfig(_FollowerConfig):
    pass


@dataclass(kw_only=True)
class _LeaderConfig(TeleoperatorConfig):
    port: str


@TeleoperatorConfig.register_subclass("vla_so101_leader")
@dataclass(kw_only=True)
class VLASO101LeaderConfig(_LeaderConfig):
    pass


@TeleoperatorConfig.register_subclass("vla_koch_leader")
@dataclass(kw_only=True)
class VLAKochLeaderConfig(_LeaderConfig):
    pass
