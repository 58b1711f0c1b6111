"""Scripted experts for the SO-101 tasks: Cartesian waypoints, inverse kinematics, grasp logic.

An expert reads the true object poses (privileged state) at reset and plans waypoints for the fingertip: above the
object, down to grasp height with the jaws open, close, lift, carry, lower, open, retreat. Each control tick it
moves a commanded tip target towards the next waypoint at a bounded speed, solves IK (warm-started) and returns an
action in the env's units. It watches what it holds and what its plan achieved: when the cube slips out of the
jaws on the way, or the plan ends without the task done (a cube released beside its zone, a missed grasp), it
plans again from the objects' new poses, up to `max_retries` times (default `MAX_RETRIES`). Demonstrations
recorded with perturbed actions (`vla record --action-noise`) then show how to recover, which a policy needs to
mend its own near misses.
The fixed jaw (where the tip site is) goes to the near face of the cube, with the jaws' closing axis along the cube
face normal closest to the radial direction; the moving jaw closes from the far side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla.envs.kinematics import ArmIK, topdown_rotation
from vla.envs.so101 import SO101Env
from vla.envs.tasks import CUBE_HALF, Pick, Place, Reach, Stack, cube_yaw

OPEN = 45.0  # gripper command while approaching (0-100 scale), about 60 mm between the pads
CLOSED = 0.0
HOVER = 0.07  # metres above the grasp height before descending
CARRY_Z = 0.085
SPEED = 0.25  # metres per second for the commanded tip
MAX_RETRIES = 3  # new plans after a drop or an unfinished task, per episode
HELD = 0.04  # metres from the tip within which a carried cube counts as still held
CLEARANCE = 0.009  # from the tip site (the fixed pad's centre, 5 mm inside its face) to the cube face


@dataclass
class Waypoint:
    pos: np.ndarray
    yaw: float
    gripper: float
    hold: int = 0  # ticks to stay once reached (lets the gripper close or open)
    tol: float = 0.01  # metres between the measured tip and the waypoint to count as reached
    timeout: int = 20  # ticks after the commanded target arrives, before moving on regardless


def raised(pos: np.ndarray, dz: float) -> np.ndarray:
    return pos + np.array([0.0, 0.0, dz])


def grasp_pose(env: SO101Env, cube: str) -> tuple[np.ndarray, float]:
    """Fingertip position and jaw yaw for a top-down grasp of `cube`."""
    centre = env.body_pos(cube)
    radial = np.arctan2(centre[1], centre[0])
    faces = cube_yaw(env, cube) + np.arange(4) * np.pi / 2
    phi = faces[np.argmin(np.abs(np.angle(np.exp(1j * (faces - radial)))))]
    axis = np.array([np.cos(phi), np.sin(phi), 0.0])
    tip = centre - (CUBE_HALF + CLEARANCE) * axis
    tip[2] = max(centre[2], 0.012)
    return tip, float(phi + np.pi / 2)


def pick_waypoints(env: SO101Env, cube: str) -> list[Waypoint]:
    tip, yaw = grasp_pose(env, cube)
    return [
        Waypoint(raised(tip, HOVER), yaw, OPEN, tol=0.015),
        Waypoint(tip, yaw, OPEN, tol=0.006),
        Waypoint(tip, yaw, CLOSED, hold=8, tol=1.0),
        Waypoint(np.array([tip[0], tip[1], CARRY_Z]), yaw, CLOSED, tol=0.02),
    ]


def release_waypoints(xy: np.ndarray, z: float, yaw: float) -> list[Waypoint]:
    """Carry what is held to above `xy`, lower it so its bottom is at `z`, open and retreat."""
    offset = CUBE_HALF + CLEARANCE
    axis = np.array([np.sin(yaw), -np.cos(yaw), 0.0])  # jaw closing axis for this yaw
    tip = np.array([xy[0], xy[1], z + CUBE_HALF]) - offset * axis
    return [
        Waypoint(np.array([tip[0], tip[1], CARRY_Z]), yaw, CLOSED, tol=0.015),
        Waypoint(raised(tip, 0.004), yaw, CLOSED, tol=0.006),
        Waypoint(raised(tip, 0.004), yaw, OPEN, hold=8, tol=1.0),
        Waypoint(raised(tip, HOVER), yaw, OPEN, tol=0.02),
    ]


class ScriptedExpert:
    """Drives an `SO101Env` through its task; call `reset()` after each env reset, then `act()` every tick."""

    def __init__(self, env: SO101Env, max_retries: int = MAX_RETRIES):
        self.env = env
        self.ik = ArmIK(env.model)
        self.max_retries = max_retries
        self.plan: list[Waypoint] = []
        self.cube: str | None = None  # the cube the plan grasps

    def reset(self) -> None:
        self.plan = self._plan()
        self.index = 0
        self.ticks = 0
        self.retries = 0
        self.target = self.env.tip
        self.q = self.env.qpos[:5]

    def _plan(self) -> list[Waypoint]:
        """Waypoints for the task from the objects' present poses."""
        env, task = self.env, self.env.task_spec
        self.cube = None
        if isinstance(task, Reach):
            target = np.array([*task.dot, 0.012])
            yaw = float(np.arctan2(target[1], target[0]) + np.pi / 2)
            return [Waypoint(raised(target, 0.05), yaw, CLOSED, tol=0.015), Waypoint(target, yaw, CLOSED)]
        if isinstance(task, Pick):
            self.cube = task.target
            return pick_waypoints(env, task.target)
        if isinstance(task, Place):
            self.cube = "cube"
            plan = pick_waypoints(env, "cube")
            return plan + release_waypoints(task.zone, 0.0, plan[0].yaw)
        if isinstance(task, Stack):
            self.cube = "red"
            plan = pick_waypoints(env, "red")
            blue = env.body_pos("blue")
            return plan + release_waypoints(blue[:2], blue[2] + CUBE_HALF, plan[0].yaw)
        raise ValueError(f"no scripted expert for task {type(task).__name__}")

    def _needs_new_plan(self) -> bool:
        if self.retries >= self.max_retries or self.cube is None:
            return False
        if self.index >= len(self.plan):  # the plan is done: is the task?
            return not self.env.is_success()
        carrying = self.index > 0 and self.plan[self.index - 1].gripper == self.plan[self.index].gripper == CLOSED
        if carrying:  # the jaws closed on the cube a waypoint ago: has it slipped out since?
            return bool(np.linalg.norm(self.env.body_pos(self.cube) - self.env.tip) > HELD)
        return False

    def act(self) -> np.ndarray:
        if self._needs_new_plan():
            self.plan, self.index, self.ticks = self._plan(), 0, 0
            self.retries += 1
        wp = self.plan[min(self.index, len(self.plan) - 1)]
        step = SPEED / self.env.config.control_hz
        delta = wp.pos - self.target
        dist = float(np.linalg.norm(delta))
        self.target = wp.pos.copy() if dist <= step else self.target + delta * (step / dist)
        arrived = dist <= step
        if arrived:
            self.ticks += 1
            reached = np.linalg.norm(self.env.tip - wp.pos) < wp.tol
            if (reached and self.ticks > wp.hold) or self.ticks > wp.timeout:
                self.index += 1
                self.ticks = 0
        self.q, _ = self.ik.solve(self.target, self.q, topdown_rotation(wp.yaw))
        action = self.env.to_user(np.append(self.q, 0.0))
        action[5] = wp.gripper
        return action.astype(np.float32)
