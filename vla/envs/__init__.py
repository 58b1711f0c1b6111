"""MuJoCo environments: SO-101 tasks with language, the Meta-World adapter, scripted experts, rollouts.

Importing this package picks the offscreen OpenGL backend before MuJoCo is first imported (MuJoCo reads
`MUJOCO_GL` at import): EGL when libEGL is present, else OSMesa. A `MUJOCO_GL` set by the user wins.
"""

import ctypes.util
import os

if not os.environ.get("MUJOCO_GL"):
    os.environ["MUJOCO_GL"] = "egl" if ctypes.util.find_library("EGL") else "osmesa"
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import sys

from vla.envs.registry import ENV_IDS, make_so101, register_all

register_all()

if "lerobot" in sys.modules:  # `--env.discover_packages_path=vla.envs` from a LeRobot CLI: register the EnvConfig
    import vla.envs.lerobot_config  # noqa: F401

__all__ = ["ENV_IDS", "make_so101"]
