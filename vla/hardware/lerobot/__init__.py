"""Our arms as LeRobot 0.4.4 `Robot` / `Teleoperator` types, so LeRobot's tools drive them through our drivers:

    lerobot-teleoperate --robot.type=vla_so101_follower --robot.port=/dev/ttyACM0 --robot.id=my_arm \\
        --teleop.type=vla_so101_leader --teleop.port=/dev/ttyACM1 --teleop.id=my_leader
    lerobot-record --robot.type=vla_so101_follower ... --robot.cameras="{front: {type: opencv, ...}}"

Types: `vla_so101_follower`, `vla_so101_leader`, `vla_koch_follower`, `vla_koch_leader`. They register when our
package is imported, which every LeRobot command does (it imports installed `lerobot_policy_*` distributions);
`--robot.discover_packages_path=vla.hardware` also works. Calibration files are LeRobot's own (`name` is LeRobot's
`so_follower` / `so_leader` / `koch_follower` / `koch_leader`), so `lerobot-calibrate` results carry over.
Cameras are LeRobot's camera classes. This module imports LeRobot (and so torch); the rest of `vla.hardware`
does not.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from lerobot.cameras import Camera, make_cameras_from_configs
from lerobot.robots import Robot
from lerobot.teleoperators import Teleoperator

from vla.hardware.arms import arm_spec
from vla.hardware.lerobot.config import (
    VLAKochFollowerConfig,
    VLAKochLeaderConfig,
    VLASO101FollowerConfig,
    VLASO101LeaderConfig,
    VLATestPatternCameraConfig,
    _FollowerConfig,
    _LeaderConfig,
)
from vla.hardware.pattern import pattern_frame
from vla.hardware.robots import Arm, Follower, Leader
from vla.hardware.safety import SafetyConfig


class _ArmDevice:
    """What followers and leaders share: the arm does the work, LeRobot's interface is a thin layer."""

    arm: Arm

    def _connect_arm(self, calibrate: bool) -> None:
        # `lerobot-calibrate` connects with calibrate=False and then calls calibrate(): with no calibration file
        # yet, open the bus only.
        if not self.arm.bus.calibration and not calibrate:
            self.arm.bus.connect()
        else:
            self.arm.connect(calibrate=calibrate)

    @property
    def is_calibrated(self) -> bool:
        return self.arm.is_calibrated

    def calibrate(self) -> None:
        self.arm.calibrate()

    def configure(self) -> None:
        pass  # done in connect(): servo settings are written with the calibration


class _VLAFollower(_ArmDevice, Robot):
    robot: str
    arm: Follower

    def __init__(self, config: _FollowerConfig):
        super().__init__(config)
        self.config = config
        safety = SafetyConfig(max_step=config.max_step, max_velocity=config.max_velocity)
        self.arm = Follower(arm_spec(self.robot, "follower"), config.port, config.id or "default",
                            on_exit=config.on_exit, safety=safety, calibration_path=self.calibration_fpath)  # fmt: skip
        self.cameras = make_cameras_from_configs(config.cameras)

    @cached_property
    def observation_features(self) -> dict[str, Any]:
        cams = {name: (cfg.height, cfg.width, 3) for name, cfg in self.config.cameras.items()}
        return {**{k: float for k in self.arm.spec.feature_names}, **cams}

    @cached_property
    def action_features(self) -> dict[str, type]:
        return {k: float for k in self.arm.spec.feature_names}

    @property
    def is_connected(self) -> bool:
        return self.arm.is_connected and all(cam.is_connected for cam in self.cameras.values())

    def connect(self, calibrate: bool = True) -> None:
        self._connect_arm(calibrate)
        for cam in self.cameras.values():
            cam.connect()

    def get_observation(self) -> dict[str, Any]:
        obs: dict[str, Any] = self.arm.get_observation()
        for name, cam in self.cameras.items():
            obs[name] = cam.read_latest()
        return obs

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]:
        return self.arm.send_action({k: float(v) for k, v in action.items() if k.endswith(".pos")})

    def disconnect(self) -> None:
        self.arm.disconnect()
        for cam in self.cameras.values():
            cam.disconnect()


class VLASO101Follower(_VLAFollower):
    config_class = VLASO101FollowerConfig
    name = "so_follower"
    robot = "so101"


class VLAKochFollower(_VLAFollower):
    config_class = VLAKochFollowerConfig
    name = "koch_follower"
    robot = "koch"


class _VLALeader(_ArmDevice, Teleoperator):
    robot: str
    arm: Leader

    def __init__(self, config: _LeaderConfig):
        super().__init__(config)
        self.config = config
        self.arm = Leader(arm_spec(self.robot, "leader"), config.port, config.id or "default",
                          calibration_path=self.calibration_fpath)  # fmt: skip

    @cached_property
    def action_features(self) -> dict[str, type]:
        return {k: float for k in self.arm.spec.feature_names}

    @cached_property
    def feedback_features(self) -> dict[str, type]:
        """Non-empty, with enable_torque/disable_torque below: LeRobot treats the leader as actuated, so its DAgger
        hand-over drives the leader to the follower's pose before a person takes over."""
        return {k: float for k in self.arm.spec.feature_names}

    @property
    def is_connected(self) -> bool:
        return self.arm.is_connected

    def connect(self, calibrate: bool = True) -> None:
        self._connect_arm(calibrate)

    def get_action(self) -> dict[str, float]:
        return self.arm.get_action()

    def send_feedback(self, feedback: dict[str, Any]) -> None:
        self.arm.send_feedback({k: float(v) for k, v in feedback.items() if k.endswith(".pos")})

    def enable_torque(self) -> None:
        self.arm.enable_torque()

    def disable_torque(self) -> None:
        self.arm.disable_torque()

    def disconnect(self) -> None:
        self.arm.disconnect()


class VLASO101Leader(_VLALeader):
    config_class = VLASO101LeaderConfig
    name = "so_leader"
    robot = "so101"


class VLAKochLeader(_VLALeader):
    config_class = VLAKochLeaderConfig
    name = "koch_leader"
    robot = "koch"


class VLATestPatternCamera(Camera):
    """`--robot.cameras="{front: {type: vla_test_pattern, width: 96, height: 96}}"`: the moving test pattern at the
    configured size, one new frame per read, never waiting."""

    def __init__(self, config: VLATestPatternCameraConfig):
        super().__init__(config)
        self.config, self._index, self._connected = config, 0, False

    @property
    def is_connected(self) -> bool:
        return self._connected

    @staticmethod
    def find_cameras() -> list[dict[str, Any]]:
        return []

    def connect(self, warmup: bool = True) -> None:
        self._connected = True

    def read(self) -> Any:
        self._index += 1
        return pattern_frame(int(self.config.height or 480), int(self.config.width or 640), self._index)

    def async_read(self, timeout_ms: float = 200) -> Any:
        return self.read()

    def read_latest(self, max_age_ms: int = 500) -> Any:
        return self.read()

    def disconnect(self) -> None:
        self._connected = False
