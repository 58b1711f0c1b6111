"""Meta-World v3 (`metaworld==3.0.0`) as a peer benchmark: a corner camera and a camera behind the gripper, its
shipped scripted experts, and LeRobot's one-line task descriptions as instructions.

Seeding: Meta-World 3.0.0 ignores `reset(seed=)`. We seed its generator with `env.seed(seed)` and unfreeze its
random reset vector before every reset, so each seed gives its own (reproducible) object and goal positions. We
never call `set_task` (it unpickles task data); the flags it would set are set directly, goal observable as in
MT1. After the reset we recompute MuJoCo's derived positions: Meta-World moves the goal marker without doing so,
and the first frame drew the marker where another draw had put it (LeRobot 0.6.1's env renders it so too). The
corner camera sits where LeRobot puts it and its image is turned right side up (it renders flipped).

Cameras: `corner` is LeRobot's one view. `gripper` is Meta-World's `behindGripper`, which rides on the hand (a wrist
camera, as on the SO-101): the goal markers of reach, push and pick-place are spheres of 2 cm radius, 2-3 pixels of
the 96 px corner image, and from one fixed view a sphere in the air cannot be ranged; seen from the hand it grows as
the hand nears it. `cameras=("corner",)` gives LeRobot's setup.

Start pose: every Meta-World episode starts with the hand at one point (`hand_init_pos`), so along the expert's
path the hand's place tells the goal, a shortcut a policy can learn instead of looking (docs/learning.md; on reach
alone, measured, it did not matter). `start_noise` (cm) moves the hand's start by up to that much on each axis,
drawn from the episode's seed; the objects and goal of a seed stay where they were. Evaluation keeps Meta-World's
start (0).

Several tasks in one process (a multi-task recording or rollout): each env renders in an OpenGL context of its own,
and gymnasium's renderer makes its context current only when one env holds two viewers, so every env drew with the
context created last, whose meshes and textures are another task's: garbage for any task whose scene differs from
the last one made (every six-task recording before 2026-12-07; reach, push and pick-place share their scene, so
three of them together were not hit). `render_camera` makes the env's own context current first.
"""

from __future__ import annotations

import json
import warnings
from importlib import resources
from typing import Any

import gymnasium as gym
import numpy as np

from vla.sim.gl import mujoco  # (picks the offscreen OpenGL backend before Meta-World imports MuJoCo)

TASKS = ("reach", "push", "pick-place", "button-press-topdown", "drawer-open", "door-open")
CAMERAS = {"corner": "corner2", "gripper": "behindGripper"}  # our name -> Meta-World's
CAMERA_POS = (0.75, 0.075, 0.7)  # corner2, where LeRobot puts it
FLIPPED = ("corner2",)  # rendered upside down
MAX_START_NOISE = 10.0  # cm; the six tasks' experts were checked up to here (58 of 60 seeds succeeded)
START_STREAM = 0x57A27  # the start pose's random stream, apart from Meta-World's (objects, goal)


def lerobot_task_table() -> dict[str, dict[str, str]]:
    """LeRobot 0.4.4's Meta-World descriptions and expert class names (a JSON file shipped in its package)."""
    data = json.loads(resources.files("lerobot.envs").joinpath("metaworld_config.json").read_text())
    return {"descriptions": data["TASK_DESCRIPTIONS"], "policies": data["TASK_POLICY_MAPPING"]}


class MetaWorldEnv(gym.Env):
    """A Meta-World v3 task with our observation conventions (`pixels`, `agent_pos`, `task_description`)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}  # noqa: RUF012  (gymnasium's convention)
    noise_unit = "hand-motion units (1 = 1 cm a step)"  # of `vla record --action-noise`; actions lie in [-1, 1]
    noise_limit = 1.0
    robot_type = "sawyer"
    feature_names: tuple[str, ...] = ("x", "y", "z", "gripper")
    action_names: tuple[str, ...] = ("dx", "dy", "dz", "grip")

    def __init__(self, task: str, image_size: tuple[int, int] = (96, 96), max_steps: int = 400,
                 cameras: tuple[str, ...] = ("corner", "gripper"), start_noise: float = 0.0):
        import metaworld

        name = f"{task}-v3"
        if name not in metaworld.env_dict.ALL_V3_ENVIRONMENTS:
            raise ValueError(f"unknown Meta-World task '{task}'; try one of {', '.join(TASKS)}")
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(f"unknown Meta-World camera(s) {unknown}; choose from {', '.join(CAMERAS)}")
        if not 0.0 <= start_noise <= MAX_START_NOISE:
            raise ValueError(f"Meta-World start noise is in cm on each hand axis, from 0 to {MAX_START_NOISE}; "
                             f"got {start_noise}")  # fmt: skip
        self.name = name
        self.cameras = tuple(cameras)
        self.start_noise = float(start_noise)
        h, w = image_size
        cls = metaworld.env_dict.ALL_V3_ENVIRONMENTS[name]
        self.env = cls(render_mode="rgb_array", camera_name=CAMERAS["corner"], width=w, height=h)
        self.env._partially_observable = False
        self.env.__dict__.pop("sawyer_observation_space", None)  # cached with the goal hidden (zero bounds)
        self.env._set_task_called = True
        self.env.max_path_length = max_steps + 1  # we truncate ourselves
        self._hand_home = np.array(self.env.hand_init_pos, dtype=np.float64)
        self._start_rng = np.random.default_rng()
        self._camera_ids = {c: self.env.model.camera(CAMERAS[c]).id for c in CAMERAS}
        self.env.model.cam_pos[self._camera_ids["corner"]] = CAMERA_POS
        self.env.model.vis.quality.shadowsize = 0
        self.env.model.vis.quality.offsamples = 0
        self.env.model.light_castshadow[:] = 0
        table = lerobot_task_table()
        self.instruction = table["descriptions"][name]
        self.policy_name = table["policies"][name]
        self._max_episode_steps = max_steps
        self.observation_space = gym.spaces.Dict(
            {
                "pixels": gym.spaces.Dict({c: gym.spaces.Box(0, 255, (h, w, 3), np.uint8) for c in self.cameras}),
                "agent_pos": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
            }
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.raw_obs: np.ndarray = np.zeros(39)
        self.steps = 0

    @property
    def task_description(self) -> str:
        return self.instruction

    def _observation(self) -> dict[str, Any]:
        pixels = {c: self.render_camera(c) for c in self.cameras}
        return {"pixels": pixels, "agent_pos": self.raw_obs[:4].astype(np.float32)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.env.seed(seed)
            self._start_rng = np.random.default_rng([seed, START_STREAM])
        offset = self._start_rng.uniform(-1.0, 1.0, 3) * self.start_noise / 100.0  # drawn always: seeds stay aligned
        self.env.hand_init_pos = self._hand_home + offset
        self.env._freeze_rand_vec = False
        self.env.seeded_rand_vec = True
        self.raw_obs, _ = self.env.reset()
        # Meta-World moves the goal marker (a site) to the new goal but leaves the rendered world positions from
        # before: without this the first frame shows the marker somewhere else (another draw), until the first step.
        mujoco.mj_forward(self.env.model, self.env.data)
        self.steps = 0
        return self._observation(), {"is_success": False, "task": self.instruction}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float32).reshape(-1), -1.0, 1.0)
        if action.shape != (4,) or not np.all(np.isfinite(action)):
            raise ValueError(f"Meta-World action must be 4 finite numbers {self.action_names}; got {action}")
        self.raw_obs, reward, _, _, info = self.env.step(action)
        self.steps += 1
        success = bool(info.get("success", 0.0))
        truncated = self.steps >= self._max_episode_steps
        return self._observation(), float(reward), success, truncated, {"is_success": success, "task": self.instruction}

    def render(self) -> np.ndarray:
        """The corner view (what rollout videos show)."""
        return self.render_camera("corner")

    def render_camera(self, camera: str) -> np.ndarray:
        renderer = self.env.mujoco_renderer
        renderer.camera_id = self._camera_ids[camera]
        renderer._get_viewer("rgb_array").make_context_current()  # another env's may be current (module docstring)
        image = self.env.render()
        return np.flip(image, (0, 1)).copy() if CAMERAS[camera] in FLIPPED else image

    def close(self) -> None:
        self.env.close()


class MetaWorldExpert:
    """Meta-World's own scripted policy for the task, acting on the full 39-d state."""

    def __init__(self, env: MetaWorldEnv):
        import metaworld.policies as policies

        self.env = env
        self.policy = getattr(policies, env.policy_name)()

    def reset(self) -> None:
        pass

    def act(self) -> np.ndarray:
        with warnings.catch_warnings():  # "Constant(s) may be too high": the env clips to [-1, 1], as do we
            warnings.simplefilter("ignore", UserWarning)
            action = self.policy.get_action(self.env.raw_obs)
        return np.clip(action, -1.0, 1.0).astype(np.float32)
