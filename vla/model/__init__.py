"""The VLA network only: backbone, action expert, flow matching, sampling. Pure torch + transformers."""

from vla.model.config import PRESETS, TextConfig, VisionConfig, VLAModelConfig
from vla.model.observation import Observation
from vla.model.vla import PrefixCache, VLAModel

__all__ = ["PRESETS", "Observation", "PrefixCache", "TextConfig", "VLAModel", "VLAModelConfig", "VisionConfig"]
