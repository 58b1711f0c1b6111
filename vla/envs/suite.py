"""Env names as the `vla` command takes them (`so101/<task>`, `metaworld/<task>`), their experts and the
LeRobot dataset features they record. Every env here returns {"pixels": {cam: HxWx3}, "agent_pos": (D,)}, sets
`task_description`, `feature_names`, `robot_type`, and reports `info["is_success"]`.
"""

from __future__ import annotations

from typing import Any, Protocol

import gymnasium as gym
import numpy as np


class SimEnv(Protocol):
    """What `vla record` and `vla rollout` use of an env (a gymnasium env plus our conventions)."""

    metadata: dict[str, Any]
    observation_space: gym.spaces.Space
    action_space: gym.spaces.Space
    feature_names: tuple[str, ...]

    @property
    def task_description(self) -> str: ...
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]: ...
    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]: ...
    def render(self) -> np.ndarray: ...
    def close(self) -> None: ...


class Expert(Protocol):
    def reset(self) -> None: ...
    def act(self) -> Any: ...


def make_env(name: str, image_size: tuple[int, int] = (96, 96), **kwargs: Any) -> SimEnv:
    suite, _, task = name.partition("/")
    if suite == "so101":
        from vla.envs.registry import make_so101

        return make_so101(task, image_size=image_size, **kwargs)
    if suite == "metaworld":
        from vla.envs.metaworld import MetaWorldEnv

        return MetaWorldEnv(task, image_size=image_size, **kwargs)
    raise ValueError(f"unknown env '{name}': expected so101/<task> or metaworld/<task>")


def make_expert(env: SimEnv) -> Expert:
    from vla.envs.so101 import SO101Env

    if isinstance(env, SO101Env):
        from vla.envs.experts import ScriptedExpert

        return ScriptedExpert(env)
    from vla.envs.metaworld import MetaWorldEnv, MetaWorldExpert

    if isinstance(env, MetaWorldEnv):
        return MetaWorldExpert(env)
    raise TypeError(f"no scripted expert for {type(env).__name__}")


def dataset_features(env: SimEnv) -> dict[str, dict]:
    """LeRobot v3 feature spec of what `vla record` writes from `env` (video storage; image is set by the writer)."""
    space = env.observation_space
    names = list(env.feature_names)
    feats: dict[str, dict] = {}
    for cam, box in space["pixels"].items():  # type: ignore[index]
        feats[f"observation.images.{cam}"] = {
            "dtype": "video", "shape": tuple(box.shape), "names": ["height", "width", "channels"],
        }  # fmt: skip
    state_dim = space["agent_pos"].shape[0]  # type: ignore[index]
    action_names = list(getattr(env, "action_names", names))
    feats["observation.state"] = {"dtype": "float32", "shape": (state_dim,), "names": names}
    feats["action"] = {"dtype": "float32", "shape": env.action_space.shape, "names": action_names}
    return feats
