"""Gymnasium ids for every task: `so101/<task>` (and `metaworld/<task>` from `vla.envs.metaworld`).

Registered with no wrappers (no order enforcing, no env checker, no TimeLimit: the env truncates itself), so
`gym.make` returns the env itself and LeRobot's eval loop can read `task_description` and `_max_episode_steps`.
Registering imports neither MuJoCo nor the tasks (the entry point is a string, resolved by `gym.make`), so
`import vla.envs` is cheap and has no side effects beyond gymnasium's registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gymnasium as gym

if TYPE_CHECKING:
    from vla.envs.so101 import SO101Env

TASK_NAMES = ("reach", "pick", "pick-color", "place", "stack")  # vla.envs.tasks.TASKS, in this order
JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
ENV_IDS = tuple(f"so101/{name}" for name in TASK_NAMES)


def make_so101(
    task: str,
    image_size: tuple[int, int] = (96, 96),
    cameras: tuple[str, ...] = ("front", "wrist"),
    max_steps: int | None = None,
    render_size: tuple[int, int] = (240, 320),
    render_mode: str | None = "rgb_array",
    start_noise: float | None = None,
) -> SO101Env:
    """`start_noise`: how far (joint degrees, each arm joint) the arm's start may lie from home; None: the
    config's default (4)."""
    from vla.envs.so101 import SO101Config, SO101Env
    from vla.envs.tasks import TASKS

    if task not in TASKS:
        raise ValueError(f"unknown SO-101 task '{task}'; available: {', '.join(TASKS)}")
    if start_noise is not None and not 0.0 <= start_noise <= 45.0:
        raise ValueError(f"SO-101 start noise is in joint degrees, from 0 to 45; got {start_noise}")
    config = SO101Config(
        image_size=tuple(image_size),  # type: ignore[arg-type]
        cameras=tuple(cameras),
        max_steps=max_steps,
        render_size=tuple(render_size),  # type: ignore[arg-type]
        home_noise_deg=SO101Config.home_noise_deg if start_noise is None else float(start_noise),
    )
    return SO101Env(TASKS[task](), config, render_mode=render_mode)


def task_scene(task: str, seed: int = 0, image_size: tuple[int, int] = (96, 96),
               cameras: tuple[str, ...] = ("front", "wrist")) -> SO101Env:
    """An SO-101 task reset with `seed`, for the virtual arm's MuJoCo twin to stand in
    (`VirtualArm(scene=task_scene("pick-color", seed=3))`). Its renderer is closed: an OpenGL context belongs to
    one thread, and the twin renders from the thread that films."""
    env = make_so101(task, image_size=image_size, cameras=cameras)
    env.reset(seed=seed)
    env.close()
    return env


def register_all() -> None:
    for name in TASK_NAMES:
        env_id = f"so101/{name}"
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point="vla.envs.registry:make_so101",
                kwargs={"task": name},
                order_enforce=False,
                disable_env_checker=True,
            )
