"""Importing this registers our types with LeRobot and does nothing else (LeRobot imports every installed
`lerobot_policy_*` distribution): `--policy.type=vla` with its processor steps, `--env.type=vla_so101` for
`lerobot-eval` (MuJoCo is imported only when an env is made), our arms as `--robot.type=vla_so101_follower` /
`vla_koch_follower` and `--teleop.type=vla_so101_leader` / `vla_koch_leader`. Nothing in LeRobot is replaced.

Training from the zarr frame cache goes through our own entry point, `vla train` (vla/train.py), which takes every
`lerobot-train` flag."""

import vla.envs.lerobot_config
import vla.hardware.lerobot  # noqa: F401  (registers the robot and teleoperator types)
from vla.policies.configuration_vla import VLAConfig
from vla.policies.modeling_vla import VLAPolicy
from vla.policies.processor_vla import make_vla_pre_post_processors

__all__ = ["VLAConfig", "VLAPolicy", "make_vla_pre_post_processors"]
