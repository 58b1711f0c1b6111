"""Importing this registers `--policy.type=vla` with LeRobot (it imports installed `lerobot_policy_*` packages),
and `--env.type=vla_so101` for `lerobot-eval`."""

import vla.envs.lerobot_config  # noqa: F401  (registers the SO-101 sim EnvConfig)
from vla.datasets.video import install_decoder_fallback
from vla.policies.configuration_vla import VLAConfig
from vla.policies.modeling_vla import VLAPolicy
from vla.policies.processor_vla import make_vla_pre_post_processors

install_decoder_fallback()

__all__ = ["VLAConfig", "VLAPolicy", "make_vla_pre_post_processors"]
