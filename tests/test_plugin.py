"""Importing the plugin registers our types with LeRobot and does nothing else: no LeRobot name is replaced, MuJoCo
is not loaded, no environment variable or allocator setting changes."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import importlib, json, os, sys
for name in ["lerobot.scripts.lerobot_train", "lerobot.scripts.lerobot_eval", "lerobot.scripts.lerobot_record",
             "lerobot.scripts.lerobot_rollout", "lerobot.datasets", "lerobot.datasets.factory",
             "lerobot.datasets.video_utils", "lerobot.policies.factory", "lerobot.envs.factory", "lerobot.processor"]:
    importlib.import_module(name)
def snapshot():
    return {(m, k): id(v) for m, mod in list(sys.modules.items()) if m.startswith("lerobot.") and mod is not None
            for k, v in list(vars(mod).items())}
before, env = snapshot(), dict(os.environ)
import lerobot_policy_vla
after = snapshot()
changed = sorted(f"{m}.{k}" for (m, k), i in before.items() if after.get((m, k)) != i)
from lerobot.configs import PreTrainedConfig
from lerobot.envs import EnvConfig
from lerobot.robots import RobotConfig
from lerobot.teleoperators import TeleoperatorConfig
import vla.allocator
from lerobot.configs import FeatureType, PolicyFeature
cfg = lerobot_policy_vla.VLAConfig(preset="tiny", device="cpu", push_to_hub=False)
cfg.input_features = {"observation.images.front": PolicyFeature(type=FeatureType.VISUAL, shape=(3, 32, 32))}
cfg.output_features = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(2,))}
lerobot_policy_vla.VLAPolicy(cfg)
print(json.dumps({
    "changed": changed, "mujoco": "mujoco" in sys.modules,
    "env": sorted(k for k in set(os.environ) ^ set(env)) + sorted(k for k in env if os.environ.get(k) != env[k]),
    "malloc_tuned": vla.allocator._applied,
    "types": [PreTrainedConfig.get_choice_class("vla").__name__, EnvConfig.get_choice_class("vla_so101").__name__,
              RobotConfig.get_choice_class("vla_so101_follower").__name__,
              TeleoperatorConfig.get_choice_class("vla_so101_leader").__name__],
}))
"""


def test_importing_the_plugin_registers_types_and_changes_nothing_else() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["changed"] == []  # no LeRobot module attribute replaced
    assert not seen["mujoco"]  # the sim loads when an env is made, not when LeRobot imports the plugin
    assert seen["env"] == []  # MUJOCO_GL and friends untouched
    assert seen["malloc_tuned"] is False  # a default policy leaves glibc's malloc alone (opt-in setting)
    assert seen["types"] == ["VLAConfig", "SO101EnvConfig", "VLASO101FollowerConfig", "VLASO101LeaderConfig"]
