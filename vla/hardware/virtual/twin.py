"""What the virtual servos are mounted on: joints that move in real time.

- `MujocoTwin`: the SO-101 MJCF (from `vla.sim.scene`, the same model as the simulation tasks) stepped against
  the wall clock in a background thread. Goal positions become the position actuators' targets; torque off
  zeroes an actuator's gains, so the joint goes limp under gravity as a real unpowered servo does. Present load is
  the actuator force over its force range.
- `MotorTwin`: no physics, each joint moves towards its goal at a bounded speed (a first-order servo), used for the
  Koch arm (no MJCF ships offline) and for fast tests.
- A leader arm is moved by a person, not by its servos: `HandMotion` plays that part, moving the joints of a
  `MotorTwin` along smooth random curves while their torque is off.
Angles are radians at the joint, 0 in the middle of the range (the MJCF's "new calibration" convention).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class Twin(Protocol):
    joints: tuple[str, ...]
    ranges: np.ndarray  # (J, 2) radians

    def position(self, joint: int) -> float: ...
    def velocity(self, joint: int) -> float: ...
    def effort(self, joint: int) -> float: ...
    def set_goal(self, joint: int, angle: float) -> None: ...
    def set_torque(self, joint: int, enabled: bool) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


class TaskScene(Protocol):
    """A reset SO-101 sim scene the twin stands in (`vla.envs.registry.task_scene` builds one): its MuJoCo model
    and data, `config.cameras` and `config.image_size` to render, the instruction and the task's success test."""

    model: Any
    data: Any
    config: Any

    @property
    def task_description(self) -> str: ...
    def is_success(self) -> bool: ...
    def close(self) -> None: ...


class MujocoTwin:
    """The SO-101 arm in MuJoCo, advanced in real time by a background thread (`start()` / `stop()`).

    Bare (default): the arm alone, unpowered, sagged into a rest pose under gravity. With `scene` (a reset SO-101
    sim task, built by the caller: `vla.envs.registry.task_scene`): the task's world with its objects placed, the
    arm powered and holding the sim's ready pose, and `render()` giving the task's camera images, so a policy
    trained in sim sees the same world through the virtual arm.
    """

    def __init__(self, joints: Sequence[str] = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex",
                                                  "wrist_roll", "gripper"), home: Sequence[float] | None = None,
                 settle: float = 2.0, scene: TaskScene | None = None):  # fmt: skip
        from vla.sim.gl import mujoco

        self._mj = mujoco
        self.scene = scene
        if scene is not None:
            self.model, self.data = scene.model, scene.data
        else:
            from vla.sim.scene import arm_spec

            self.model = arm_spec().compile()
            self.data = mujoco.MjData(self.model)
        self.joints = tuple(joints)
        ids = [self.model.joint(j).id for j in self.joints]
        self.qpos = self.model.jnt_qposadr[ids]
        self.qvel = self.model.jnt_dofadr[ids]
        self.actuators = [self.model.actuator(j).id for j in self.joints]
        self.ranges = self.model.jnt_range[ids].copy()
        self._gains = (self.model.actuator_gainprm[:, 0].copy(), self.model.actuator_biasprm[:, 1:3].copy())
        self._force = np.abs(self.model.actuator_forcerange[self.actuators]).max(axis=1)
        self.powered = scene is not None
        if not self.powered:
            q0 = np.zeros(len(self.joints)) if home is None else np.asarray(home, float)
            self.data.qpos[self.qpos] = q0
            self.data.ctrl[self.actuators] = q0
            mujoco.mj_forward(self.model, self.data)
            for joint in range(len(self.joints)):
                self.set_torque(joint, False)
            for _ in range(int(settle / self.model.opt.timestep)):  # unpowered: sag into a rest pose
                mujoco.mj_step(self.model, self.data)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._thread: threading.Thread | None = None
        self._running = False

    def render(self) -> dict[str, np.ndarray]:
        """The task's camera images (H, W, 3) uint8 (a task twin only)."""
        if self.scene is None:
            return {}
        renderer = getattr(self._local, "renderer", None)
        if renderer is None:  # an OpenGL context is current in one thread only: one renderer per thread
            h, w = self.scene.config.image_size
            renderer = self._local.renderer = self._mj.Renderer(self.model, h, w)
        frames = {}
        with self._lock:
            for name in self.scene.config.cameras:
                renderer.update_scene(self.data, camera=name)
                frames[name] = renderer.render().copy()
        return frames

    def close_renderer(self) -> None:
        """Release this thread's renderer (call from the thread that rendered)."""
        renderer = getattr(self._local, "renderer", None)
        if renderer is not None:
            renderer.close()
            self._local.renderer = None

    def success(self) -> bool:
        """Whether the task's success test holds now (a task twin only)."""
        if self.scene is None:
            return False
        with self._lock:
            return self.scene.is_success()

    @property
    def instruction(self) -> str:
        return self.scene.task_description if self.scene is not None else ""

    def position(self, joint: int) -> float:
        return float(self.data.qpos[self.qpos[joint]])

    def velocity(self, joint: int) -> float:
        return float(self.data.qvel[self.qvel[joint]])

    def effort(self, joint: int) -> float:
        return float(self.data.actuator_force[self.actuators[joint]] / self._force[joint])

    def set_goal(self, joint: int, angle: float) -> None:
        lo, hi = self.model.actuator_ctrlrange[self.actuators[joint]]
        self.data.ctrl[self.actuators[joint]] = min(hi, max(lo, angle))

    def set_torque(self, joint: int, enabled: bool) -> None:
        a = self.actuators[joint]
        kp, bias = self._gains
        self.model.actuator_gainprm[a, 0] = kp[a] if enabled else 0.0
        self.model.actuator_biasprm[a, 1:3] = bias[a] if enabled else 0.0

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="mujoco-twin", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join()
        if self.scene is not None:
            self.scene.close()

    def _run(self) -> None:
        dt = float(self.model.opt.timestep)
        t0, steps = time.monotonic(), 0
        while self._running:
            due = int((time.monotonic() - t0) / dt)
            if due - steps > 100:  # fell behind (machine busy): skip ahead rather than run fast
                steps = due - 100
            with self._lock:
                while steps < due:
                    self._mj.mj_step(self.model, self.data)
                    steps += 1
            time.sleep(dt)


class MotorTwin:
    """Joints that move to their goals at `max_speed` rad/s with a first-order lag; limp joints stay put."""

    def __init__(self, ranges: np.ndarray, joints: Sequence[str], max_speed: float = 4.0, lag: float = 0.05,
                 home: Sequence[float] | None = None):  # fmt: skip
        self.joints = tuple(joints)
        self.ranges = np.asarray(ranges, float)
        self.max_speed, self.lag = max_speed, lag
        n = len(self.joints)
        self.q = np.zeros(n) if home is None else np.asarray(home, float).copy()
        self.qd = np.zeros(n)
        self.goal = self.q.copy()
        self.torque = np.zeros(n, bool)
        self.hand: HandMotion | None = None
        self._t = time.monotonic()
        self._lock = threading.Lock()

    def _advance(self) -> None:
        with self._lock:
            now = time.monotonic()
            dt, self._t = now - self._t, now
            if dt <= 0:
                return
            target = np.where(self.torque, self.goal, self.q)
            if self.hand is not None:
                target = np.where(self.torque, target, self.hand(now))
            step = (target - self.q) * min(1.0, dt / self.lag)
            step = np.clip(step, -self.max_speed * dt, self.max_speed * dt)
            self.qd = step / dt
            self.q = np.clip(self.q + step, self.ranges[:, 0], self.ranges[:, 1])

    def position(self, joint: int) -> float:
        self._advance()
        return float(self.q[joint])

    def velocity(self, joint: int) -> float:
        self._advance()
        return float(self.qd[joint])

    def effort(self, joint: int) -> float:
        self._advance()
        return float(np.clip((self.goal[joint] - self.q[joint]) * 2.0, -1, 1)) if self.torque[joint] else 0.0

    def set_goal(self, joint: int, angle: float) -> None:
        self._advance()
        self.goal[joint] = min(self.ranges[joint, 1], max(self.ranges[joint, 0], angle))

    def set_torque(self, joint: int, enabled: bool) -> None:
        self._advance()
        self.torque[joint] = enabled

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class HandMotion:
    """A person moving a leader arm: each joint follows a sum of slow sinusoids inside 40% of its range
    (peaks around 40 degrees/s, an unhurried teleoperation). `freeze()` holds the arm still and `resume()` moves it
    on from where it stopped: the motion's clock runs only while the hand moves, so the path is continuous."""

    def __init__(self, ranges: np.ndarray, seed: int = 0, speed: float = 0.15):
        rng = np.random.default_rng(seed)
        n = len(ranges)
        self.centre = np.asarray(ranges, float).mean(axis=1)
        self.amp = 0.2 * np.diff(np.asarray(ranges, float), axis=1)[:, 0]
        self.freq = rng.uniform(0.5, 1.0, (n, 2)) * speed
        self.phase = rng.uniform(0, 2 * math.pi, (n, 2))
        self.t0 = time.monotonic()  # when the motion's clock read 0, shifted by each hold
        self.frozen_at: float | None = None

    def __call__(self, now: float) -> np.ndarray:
        t = (self.frozen_at if self.frozen_at is not None else now) - self.t0
        wave = np.sin(2 * math.pi * self.freq * t + self.phase).mean(axis=1)
        return self.centre + self.amp * wave

    def freeze(self) -> None:
        """The person stops moving and holds the arm where it is."""
        if self.frozen_at is None:
            self.frozen_at = time.monotonic()

    def resume(self) -> None:
        """The person moves the arm on from where it was held."""
        if self.frozen_at is not None:
            self.t0 += time.monotonic() - self.frozen_at
            self.frozen_at = None
