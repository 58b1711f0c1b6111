"""The SO-101 tasks: objects, randomised initial states, instructions, success tests and dense rewards.

Every task places its objects at random in the arm's top-down workspace (15-25 cm from the base, +-50 degrees),
draws one instruction from several phrasings, and reports named reward terms. `pick-color` is the one that needs
language: three cubes, and only the instruction says which to lift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from vla.sim.gl import mujoco
from vla.sim.scene import add_cube, add_marker

if TYPE_CHECKING:
    from vla.envs.so101 import SO101Env

COLORS = {
    "red": (0.85, 0.12, 0.1, 1.0),
    "green": (0.12, 0.65, 0.2, 1.0),
    "blue": (0.15, 0.3, 0.9, 1.0),
    "yellow": (0.95, 0.8, 0.1, 1.0),
}
CUBE_HALF = 0.0125
LIFT_HEIGHT = 0.06  # a cube counts as lifted when its centre is this high (it rests at 0.0125)
RADIUS = (0.15, 0.25)
ANGLE = np.radians(50.0)


@dataclass
class Result:
    success: bool
    reward: float
    terms: dict[str, float] = field(default_factory=dict)


def sample_positions(rng: np.random.Generator, n: int, min_gap: float = 0.07) -> list[np.ndarray]:
    """`n` table positions (x, y) in the workspace, at least `min_gap` apart."""
    for _ in range(1000):
        r = rng.uniform(*RADIUS, size=n)
        a = rng.uniform(-ANGLE, ANGLE, size=n)
        pts = np.stack([r * np.cos(a), r * np.sin(a)], axis=1)
        gaps = [np.linalg.norm(pts[i] - pts[j]) for i in range(n) for j in range(i)]
        if not gaps or min(gaps) >= min_gap:
            return list(pts)
    raise RuntimeError(f"could not place {n} objects {min_gap} m apart")


def set_cube(env: SO101Env, name: str, xy: np.ndarray, yaw: float) -> None:
    adr = env.model.jnt_qposadr[env.model.joint(f"{name}_joint").id]
    env.data.qpos[adr : adr + 3] = [xy[0], xy[1], CUBE_HALF]
    env.data.qpos[adr + 3 : adr + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]


def cube_yaw(env: SO101Env, name: str) -> float:
    quat = env.data.xquat[env.model.body(name).id]
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, quat)
    return float(np.arctan2(mat[3], mat[0]))


def set_marker(env: SO101Env, name: str, xy: np.ndarray) -> None:
    env.data.mocap_pos[env.model.body(name).mocapid[0]] = [xy[0], xy[1], 0.0]


def touching(env: SO101Env, geom: str) -> bool:
    """Whether the named geom is in contact with either gripper pad or jaw."""
    gid = env.model.geom(geom).id
    jaw_bodies = {env.model.body("gripper").id, env.model.body("moving_jaw_so101_v1").id}
    for c in env.data.contact[: env.data.ncon]:
        other = c.geom2 if c.geom1 == gid else c.geom1 if c.geom2 == gid else None
        if other is not None and env.model.geom_bodyid[other] in jaw_bodies:
            return True
    return False


class Task:
    name = ""
    max_steps = 150
    phrasings: tuple[str, ...] = ()

    def build(self, spec: mujoco.MjSpec) -> None:
        raise NotImplementedError

    def reset(self, env: SO101Env, rng: np.random.Generator) -> str:
        """Place objects, return the instruction."""
        raise NotImplementedError

    def evaluate(self, env: SO101Env) -> Result:
        raise NotImplementedError

    def retarget(self, target: str, rng: np.random.Generator) -> str:
        """Name another object of the same scene (reset's `options={"target": ...}`); return the instruction."""
        raise ValueError(f"so101/{self.name} names no object that could be changed")


class Reach(Task):
    """Touch a red disk on the table with the fingertips."""

    name = "reach"
    max_steps = 90
    phrasings: tuple[str, ...] = ("touch the red dot", "reach the red target", "move the gripper to the red marker")

    def build(self, spec: mujoco.MjSpec) -> None:
        add_marker(spec, "target", 0.015, COLORS["red"])

    def reset(self, env: SO101Env, rng: np.random.Generator) -> str:
        (self.dot,) = sample_positions(rng, 1)  # the dot's table position (no named object: no `target`)
        set_marker(env, "target", self.dot)
        return str(rng.choice(self.phrasings))

    def evaluate(self, env: SO101Env) -> Result:
        tip = env.tip
        dist_xy = float(np.linalg.norm(tip[:2] - self.dot))
        height = float(tip[2])
        success = dist_xy < 0.02 and height < 0.03
        return Result(success, -dist_xy - 0.5 * max(height - 0.02, 0.0), {"distance": dist_xy, "height": height})


class Pick(Task):
    """Lift one cube; its colour is named in the instruction but it is the only cube."""

    name = "pick"
    max_steps = 150
    phrasings: tuple[str, ...] = ("pick up the {c} cube", "lift the {c} block", "grab the {c} cube and raise it")
    n_cubes = 1

    def build(self, spec: mujoco.MjSpec) -> None:
        self.cubes = list(COLORS)[: self.n_cubes] if self.n_cubes > 1 else ["cube"]
        for name in self.cubes:
            add_cube(spec, name, CUBE_HALF, COLORS.get(name, COLORS["red"]))

    def reset(self, env: SO101Env, rng: np.random.Generator) -> str:
        spots = sample_positions(rng, len(self.cubes))
        for name, xy in zip(self.cubes, spots, strict=True):
            set_cube(env, name, xy, rng.uniform(-np.pi / 4, np.pi / 4))
        return self.retarget(str(rng.choice(self.cubes)), rng)

    def retarget(self, target: str, rng: np.random.Generator) -> str:
        if target not in self.cubes:
            raise ValueError(f"so101/{self.name} has no {target!r} cube; its cubes are {self.cubes}")
        self.target = target
        self.wrong_lift = False
        color = self.target if self.target in COLORS else "red"
        return str(rng.choice(self.phrasings)).format(c=color)

    def evaluate(self, env: SO101Env) -> Result:
        cube = env.body_pos(self.target)
        lift = float(cube[2] - CUBE_HALF)
        others_down = all(env.body_pos(c)[2] < CUBE_HALF + 0.02 for c in self.cubes if c != self.target)
        self.wrong_lift = self.wrong_lift or not others_down
        success = cube[2] > LIFT_HEIGHT and others_down
        reach = float(np.linalg.norm(env.tip - cube))
        # wrong_object: 1 once a cube other than the named one has been lifted this episode
        return Result(success, -reach + 5.0 * min(lift, LIFT_HEIGHT),
                      {"reach": reach, "lift": lift, "wrong_object": float(self.wrong_lift)})


class PickColor(Pick):
    """Three cubes of different colours; the instruction names the one to lift."""

    name = "pick-color"
    n_cubes = 3
    phrasings: tuple[str, ...] = (
        "pick up the {c} cube",
        "lift the {c} block",
        "grab the {c} one",
        "raise the {c} cube",
    )


class Place(Task):
    """Put the cube in a coloured zone and let go."""

    name = "place"
    max_steps = 240
    phrasings: tuple[str, ...] = (
        "put the red cube in the blue zone",
        "place the cube on the blue circle",
        "move the red block into the blue area",
    )
    zone_radius = 0.035

    def build(self, spec: mujoco.MjSpec) -> None:
        add_cube(spec, "cube", CUBE_HALF, COLORS["red"])
        add_marker(spec, "zone", self.zone_radius, COLORS["blue"])

    def reset(self, env: SO101Env, rng: np.random.Generator) -> str:
        cube, self.zone = sample_positions(rng, 2, min_gap=0.1)
        set_cube(env, "cube", cube, rng.uniform(-np.pi / 4, np.pi / 4))
        set_marker(env, "zone", self.zone)
        return str(rng.choice(self.phrasings))

    def evaluate(self, env: SO101Env) -> Result:
        cube = env.body_pos("cube")
        off = float(np.linalg.norm(cube[:2] - self.zone))
        resting = cube[2] < CUBE_HALF + 0.003
        success = off < self.zone_radius and resting and not touching(env, "cube")
        reach = float(np.linalg.norm(env.tip - cube))
        return Result(success, -reach - 2.0 * off, {"reach": reach, "offset": off})


class Stack(Task):
    """Put the red cube on top of the blue cube and let go."""

    name = "stack"
    max_steps = 240
    phrasings: tuple[str, ...] = ("stack the red cube on the blue cube", "put the red block on top of the blue one")

    def build(self, spec: mujoco.MjSpec) -> None:
        add_cube(spec, "red", CUBE_HALF, COLORS["red"])
        add_cube(spec, "blue", CUBE_HALF, COLORS["blue"])

    def reset(self, env: SO101Env, rng: np.random.Generator) -> str:
        red, blue = sample_positions(rng, 2, min_gap=0.09)
        set_cube(env, "red", red, rng.uniform(-np.pi / 4, np.pi / 4))
        set_cube(env, "blue", blue, rng.uniform(-np.pi / 4, np.pi / 4))
        return str(rng.choice(self.phrasings))

    def evaluate(self, env: SO101Env) -> Result:
        red, blue = env.body_pos("red"), env.body_pos("blue")
        off = float(np.linalg.norm(red[:2] - blue[:2]))
        on_top = off < CUBE_HALF and abs(red[2] - blue[2] - 2 * CUBE_HALF) < 0.004
        success = on_top and not touching(env, "red")
        reach = float(np.linalg.norm(env.tip - red))
        return Result(success, -reach - 2.0 * off, {"reach": reach, "offset": off})


TASKS: dict[str, type[Task]] = {t.name: t for t in (Reach, Pick, PickColor, Place, Stack)}
