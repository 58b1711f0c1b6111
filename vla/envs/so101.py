"""SO-101 tabletop tasks with language instructions, as gymnasium environments.

Units match the real arm as LeRobot drives it (SO-101 follower with `use_degrees=True`): the five arm joints in
degrees (zero in the middle of each joint's range, the "new calibration" convention) and the gripper in 0-100
over its range (0 closed). So a policy trained here runs unchanged on the robot and on the virtual servo bus.
Control runs at `control_hz` (30 Hz) with physics substeps; actuators are the MJCF's STS3215 position servos.

Observations: {"pixels": {camera: (H, W, 3) uint8}, "agent_pos": (6,) float32}; `info["is_success"]` every
step; `task_description` holds the episode's instruction (LeRobot's eval loop reads it); `_max_episode_steps`.
The task-specific parts (objects, instruction, success, reward) live in `vla.envs.tasks`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from vla.envs.registry import JOINTS
from vla.sim.gl import mujoco
from vla.sim.scene import CLOSE_CAMERA, FRONT_CAMERA, TIP_SITE, WRIST_CAMERA, CameraSpec, add_camera, arm_spec

if TYPE_CHECKING:
    from vla.envs.tasks import Task

FEATURE_NAMES = tuple(f"{j}.pos" for j in JOINTS)  # LeRobot's SO-101 follower feature names
CAMERAS = {c.name: c for c in (FRONT_CAMERA, WRIST_CAMERA, CLOSE_CAMERA)}
# Ready pose (degrees, gripper 0-100): tip about 12 cm above the middle of the workspace, jaws open a little.
HOME = np.array([0.0, -20.0, 20.0, 70.0, 0.0, 20.0])


@dataclass(frozen=True)
class SO101Config:
    """Rendering and timing of an SO-101 env. Sizes are (height, width)."""

    image_size: tuple[int, int] = (96, 96)
    cameras: tuple[str, ...] = ("front", "wrist")
    render_size: tuple[int, int] = (240, 320)
    control_hz: float = 30.0
    physics_dt: float = 0.002
    max_steps: int | None = None  # None: the task's own limit
    home_noise_deg: float = 4.0
    extra_cameras: tuple[CameraSpec, ...] = field(default_factory=tuple)


class SO101Env(gym.Env):
    """One SO-101 task. Build through `gym.make("so101/<task>")` or `make_so101(task_name)`."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}  # noqa: RUF012  (gymnasium's convention)
    robot_type = "so101_follower"
    feature_names = FEATURE_NAMES

    def __init__(self, task: Task, config: SO101Config | None = None, render_mode: str | None = "rgb_array"):
        self.task_spec = task
        self.config = config or SO101Config()
        unknown = [c for c in self.config.cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; SO-101 scenes have {sorted(CAMERAS)}")
        spec = arm_spec()
        for name in self.config.cameras:
            add_camera(spec, CAMERAS[name])
        if "front" not in self.config.cameras:
            add_camera(spec, FRONT_CAMERA)  # videos always show the front view
        for cam in self.config.extra_cameras:
            add_camera(spec, cam)
        task.build(spec)
        self.model = spec.compile()
        self.n_substeps = max(1, round(1.0 / (self.config.control_hz * self.config.physics_dt)))
        self.model.opt.timestep = 1.0 / (self.config.control_hz * self.n_substeps)
        self.data = mujoco.MjData(self.model)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.config.control_hz}

        self.joint_ids = np.array([self.model.joint(j).id for j in JOINTS])
        self.qpos_ids = self.model.jnt_qposadr[self.joint_ids]
        self.dof_ids = self.model.jnt_dofadr[self.joint_ids]
        self.ranges = self.model.jnt_range[self.joint_ids].copy()
        self.tip_site = self.model.site(TIP_SITE).id
        self._max_episode_steps = self.config.max_steps or task.max_steps

        h, w = self.config.image_size
        self.observation_space = gym.spaces.Dict(
            {
                "pixels": gym.spaces.Dict(
                    {c: gym.spaces.Box(0, 255, (h, w, 3), np.uint8) for c in self.config.cameras}
                ),
                "agent_pos": gym.spaces.Box(-np.inf, np.inf, (len(JOINTS),), np.float32),
            }
        )
        low, high = self.to_user(self.ranges[:, 0]), self.to_user(self.ranges[:, 1])
        self.action_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)

        self._renderer: mujoco.Renderer | None = None
        self._video_renderer: mujoco.Renderer | None = None
        self.rng = np.random.default_rng()
        self.instruction = ""
        self.steps = 0

    # -- units ----------------------------------------------------------------------------------------------
    def to_user(self, q: np.ndarray) -> np.ndarray:
        """Joint radians (…, 6) -> degrees for the arm, 0-100 over its range for the gripper."""
        q = np.asarray(q, dtype=np.float64)
        out = np.degrees(q)
        lo, hi = self.ranges[5]
        out[..., 5] = (q[..., 5] - lo) / (hi - lo) * 100.0
        return out

    def to_radians(self, u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, dtype=np.float64)
        out = np.radians(u)
        lo, hi = self.ranges[5]
        out[..., 5] = lo + u[..., 5] / 100.0 * (hi - lo)
        return out

    # -- state ----------------------------------------------------------------------------------------------
    @property
    def qpos(self) -> np.ndarray:
        return self.data.qpos[self.qpos_ids].copy()

    @property
    def tip(self) -> np.ndarray:
        return self.data.site_xpos[self.tip_site].copy()

    @property
    def task_description(self) -> str:
        return self.instruction

    @property
    def task(self) -> str:
        return self.instruction

    def is_success(self) -> bool:
        """Whether the task's success test holds in the current state."""
        return bool(self.task_spec.evaluate(self).success)

    def body_pos(self, name: str) -> np.ndarray:
        return self.data.xpos[self.model.body(name).id].copy()

    # -- gym API --------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        mujoco.mj_resetData(self.model, self.data)
        home = HOME + self.rng.uniform(-1, 1, size=6) * self.config.home_noise_deg * np.array([1, 1, 1, 1, 1, 0])
        q = np.clip(self.to_radians(home), self.ranges[:, 0], self.ranges[:, 1])
        self.data.qpos[self.qpos_ids] = q
        self.data.ctrl[:] = q
        self.instruction = self.task_spec.reset(self, self.rng)
        if options and options.get("target") is not None:  # the same scene, another object named (language probes)
            self.instruction = self.task_spec.retarget(str(options["target"]), self.rng)
        mujoco.mj_forward(self.model, self.data)
        for _ in range(10):  # let objects settle on the table
            mujoco.mj_step(self.model, self.data)
        self.steps = 0
        return self._observation(), self._info(self.task_spec.evaluate(self))

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (len(JOINTS),) or not np.all(np.isfinite(action)):
            raise ValueError(
                f"SO-101 action must be 6 finite numbers {FEATURE_NAMES} (degrees, gripper 0-100); got {action}"
            )
        limits = self.model.actuator_ctrlrange
        self.data.ctrl[:] = np.clip(self.to_radians(action), limits[:, 0], limits[:, 1])
        for _ in range(self.n_substeps):
            mujoco.mj_step(self.model, self.data)
        self.steps += 1
        result = self.task_spec.evaluate(self)
        terminated = result.success
        truncated = self.steps >= self._max_episode_steps
        return self._observation(), result.reward, terminated, truncated, self._info(result)

    def _info(self, result) -> dict[str, Any]:
        return {"is_success": bool(result.success), "task": self.instruction, **result.terms}

    def _observation(self) -> dict[str, Any]:
        pixels = {}
        if self.config.cameras:
            if self._renderer is None:
                h, w = self.config.image_size
                self._renderer = mujoco.Renderer(self.model, h, w)
            for name in self.config.cameras:
                self._renderer.update_scene(self.data, camera=name)
                pixels[name] = self._renderer.render().copy()
        return {"pixels": pixels, "agent_pos": self.to_user(self.qpos).astype(np.float32)}

    def render(self) -> np.ndarray:
        """The front view at `render_size` (for videos)."""
        if self._video_renderer is None:
            h, w = self.config.render_size
            self._video_renderer = mujoco.Renderer(self.model, h, w)
        self._video_renderer.update_scene(self.data, camera="front")
        return self._video_renderer.render().copy()

    def close(self) -> None:
        for renderer in (self._renderer, self._video_renderer):
            if renderer is not None:
                renderer.close()
        self._renderer = self._video_renderer = None
