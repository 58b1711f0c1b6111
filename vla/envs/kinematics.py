"""Inverse kinematics of the SO-101 tip on its MJCF (damped least squares), used by the scripted experts.

The arm has five joints before the gripper: pan, lift, elbow and wrist flex place the tip and its pitch in the
arm's vertical plane, wrist roll turns the jaws about the approach axis. A top-down grasp (approach axis pointing
down, jaws at a chosen yaw) is therefore reachable exactly inside the workspace; at its edge the orientation
weight lets position win.
"""

from __future__ import annotations

import numpy as np

from vla.sim.gl import mujoco
from vla.sim.scene import TIP_SITE

ARM_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")


def topdown_rotation(yaw: float) -> np.ndarray:
    """Tip frame (columns = site axes in world) for a downward approach with the jaws' y axis at `yaw`."""
    approach = np.array([0.0, 0.0, -1.0])  # the site's x axis is the approach direction
    side = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    return np.stack([approach, side, np.cross(approach, side)], axis=1)


def rotation_error(current: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation vector (world frame) that turns `current` into `target` (both 3x3)."""
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, (target @ current.T).reshape(-1))
    vel = np.zeros(3)
    mujoco.mju_quat2Vel(vel, quat, 1.0)
    return vel


class ArmIK:
    """Solves joint angles (radians, the five arm joints) for a tip position and optional orientation."""

    def __init__(self, model: mujoco.MjModel):
        self.model = model
        self.data = mujoco.MjData(model)
        self.site = model.site(TIP_SITE).id
        self.qpos_ids = np.array([model.jnt_qposadr[model.joint(n).id] for n in ARM_JOINTS])
        self.dof_ids = np.array([model.jnt_dofadr[model.joint(n).id] for n in ARM_JOINTS])
        self.lower = model.jnt_range[[model.joint(n).id for n in ARM_JOINTS], 0]
        self.upper = model.jnt_range[[model.joint(n).id for n in ARM_JOINTS], 1]

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tip position (3,) and rotation (3, 3) for arm joints `q` (5,)."""
        self.data.qpos[self.qpos_ids] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site].copy(), self.data.site_xmat[self.site].reshape(3, 3).copy()

    def solve(
        self,
        pos: np.ndarray,
        q0: np.ndarray,
        rot: np.ndarray | None = None,
        rot_weight: float = 0.3,
        iters: int = 60,
        damping: float = 1e-3,
        tol: float = 1e-4,
    ) -> tuple[np.ndarray, float]:
        """Joint angles near `q0` that put the tip at `pos` (and frame `rot`); returns (q, position error in m)."""
        q = np.clip(np.asarray(q0, float).copy(), self.lower, self.upper)
        jacp = np.zeros((3, self.model.nv))
        jacr = np.zeros((3, self.model.nv))
        err_pos = np.inf
        for _ in range(iters):
            tip, frame = self.forward(q)
            err = pos - tip
            err_pos = float(np.linalg.norm(err))
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacSite(self.model, self.data, jacp, jacr, self.site)
            jac = jacp[:, self.dof_ids]
            if rot is not None:
                err = np.concatenate([err, rot_weight * rotation_error(frame, rot)])
                jac = np.concatenate([jac, rot_weight * jacr[:, self.dof_ids]])
            if np.linalg.norm(err) < tol:
                break
            step = jac.T @ np.linalg.solve(jac @ jac.T + damping * np.eye(len(err)), err)
            q = np.clip(q + step, self.lower, self.upper)
        return q, err_pos
