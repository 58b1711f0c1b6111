"""The one place the simulation imports MuJoCo: `from vla.sim.gl import mujoco`.

MuJoCo picks its offscreen OpenGL backend from `MUJOCO_GL` when it is first imported, so the choice is made here,
just before: EGL when libEGL is present, else OSMesa. A `MUJOCO_GL` set by the user wins. Only code that
simulates imports this module; registering our types with LeRobot (lerobot_policy_vla) does not.
"""

import ctypes.util
import os

if not os.environ.get("MUJOCO_GL"):
    os.environ["MUJOCO_GL"] = "egl" if ctypes.util.find_library("EGL") else "osmesa"
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import mujoco

__all__ = ["mujoco"]
