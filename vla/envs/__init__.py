"""MuJoCo environments: SO-101 tasks with language, the Meta-World adapter, scripted experts, rollouts.

Importing this package registers the `so101/<task>` gym ids and nothing else: MuJoCo loads when an env is made
(`vla.sim.gl` picks its offscreen OpenGL backend then).
"""

import sys

from vla.envs.registry import ENV_IDS, make_so101, register_all

register_all()

if "lerobot" in sys.modules:  # `--env.discover_packages_path=vla.envs` from a LeRobot CLI: register the EnvConfig
    import vla.envs.lerobot_config  # noqa: F401

__all__ = ["ENV_IDS", "make_so101"]
