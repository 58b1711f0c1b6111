"""The LeRobot plugin: `--policy.type=vla` (configuration_vla / modeling_vla / processor_vla)."""

from vla.policies.configuration_vla import VLAConfig

__all__ = ["VLAConfig"]
