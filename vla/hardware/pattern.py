"""A test pattern for runs without a camera: a gradient that moves one pixel per frame (RGB uint8 (H, W, 3)).

`vla deploy --camera NAME=test-pattern` reads it through its camera process, and LeRobot's commands through the
`vla_test_pattern` camera type (`--robot.cameras="{front: {type: vla_test_pattern, width: 96, height: 96}}"`).
"""

from __future__ import annotations

import numpy as np


def pattern_frame(height: int, width: int, index: int) -> np.ndarray:
    """Frame `index` of the pattern at height x width."""
    y, x = np.mgrid[0:height, 0:width]
    value = ((x + y + index) % 256).astype(np.uint8)
    return np.stack([value, value[:, ::-1], np.full_like(value, index % 256)], axis=-1)
