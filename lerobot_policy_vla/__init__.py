"""Importing this registers `--policy.type=vla` with LeRobot (it imports installed `lerobot_policy_*` packages),
`--env.type=vla_so101` for `lerobot-eval`, our arms as `--robot.type=vla_so101_follower` / `vla_koch_follower`
and `--teleop.type=vla_so101_leader` / `vla_koch_leader`; it also lets `lerobot-train` read through the frame cache
(vla/datasets/lerobot_hook.py, selected by $VLA_FRAME_CACHE)."""

import vla.envs.lerobot_config  # registers the SO-101 sim EnvConfig
import vla.hardware.lerobot  # noqa: F401  (registers the robot and teleoperator types)
from vla.datasets.lerobot_hook import install_cache_hook
from vla.datasets.video import install_decoder_fallback
from vla.policies.configuration_vla import VLAConfig
from vla.policies.modeling_vla import VLAPolicy
from vla.policies.processor_vla import make_vla_pre_post_processors

install_decoder_fallback()
install_cache_hook()

__all__ = ["VLAConfig", "VLAPolicy", "make_vla_pre_post_processors"]
