"""SO-101 scenes composed with `mujoco.MjSpec`: the arm from its MJCF plus a table, lights, cameras and objects.

Rendering is set up for speed on CPU: no shadows, no multisampling, a small offscreen buffer. The arm's
fingertip pads (inert in the shipped model) are switched on so that grasps hold by friction.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla.sim.assets import so101_xml
from vla.sim.gl import mujoco
from vla.sim.meshes import cluster, read_stl

TABLE_RGBA = (0.55, 0.5, 0.45, 1.0)
TIP_SITE = "gripperframe"
WRIST_BODY = "gripper"


@dataclass(frozen=True)
class CameraSpec:
    """A fixed camera looking from `pos` at `target` (world frame), or one attached to a body."""

    name: str
    pos: tuple[float, float, float]
    target: tuple[float, float, float]
    body: str | None = None
    fovy: float = 60.0


FRONT_CAMERA = CameraSpec("front", pos=(0.62, 0.0, 0.42), target=(0.2, 0.0, 0.0), fovy=55.0)
# The front view framed on the workspace (cubes 0.15-0.25 m out, +-50 degrees): a 2.5 cm cube spans about 7 pixels
# at 96 px against 4 in `front`, whose lower third is table nearer the camera than any cube. For tasks that turn on a
# centimetre, such as stack (`vla record --cameras close,wrist`).
CLOSE_CAMERA = CameraSpec("close", pos=(0.44, 0.0, 0.40), target=(0.13, 0.0, 0.0), fovy=50.0)
# In the gripper body's frame: behind the fixed jaw, looking along the jaws towards the fingertips.
WRIST_CAMERA = CameraSpec("wrist", pos=(0.0, 0.05, -0.02), target=(-0.008, 0.0, -0.1), body=WRIST_BODY, fovy=75.0)


def look_at_quat(pos: np.ndarray, target: np.ndarray, up: np.ndarray | None = None) -> np.ndarray:
    """Quaternion (w, x, y, z) of a MuJoCo camera at `pos` looking at `target` (cameras look along -z)."""
    forward = np.asarray(target, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    up = np.array([0.0, 0.0, 1.0]) if up is None else np.asarray(up, float)
    if abs(forward @ up) > 0.99:
        up = np.array([1.0, 0.0, 0.0])
    x = np.cross(forward, up)
    x /= np.linalg.norm(x)
    y = np.cross(x, forward)
    rot = np.stack([x, y, -forward], axis=1)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, rot.reshape(-1))
    return quat


VISUAL_GROUP = 2
LOD_CELL = 0.002  # metres; see vla.sim.meshes


@functools.cache
def _coarse_mesh(path: str, cell: float) -> tuple[np.ndarray, np.ndarray]:
    return cluster(read_stl(Path(path)), cell)


def use_coarse_meshes(spec: mujoco.MjSpec, meshdir: Path, cell: float = LOD_CELL) -> None:
    """Point every visual mesh geom at a vertex-clustered copy of its mesh (collision geoms keep the original)."""
    coarse: dict[str, str] = {}
    for mesh in list(spec.meshes):
        vert, face = _coarse_mesh(str(meshdir / mesh.file), cell)
        coarse[mesh.name] = f"{mesh.name}_coarse"
        spec.add_mesh(name=coarse[mesh.name], uservert=vert.reshape(-1).tolist(), userface=face.reshape(-1).tolist())
    for geom in spec.worldbody.find_all(mujoco.mjtObj.mjOBJ_GEOM):
        if geom.type == mujoco.mjtGeom.mjGEOM_MESH and geom.group == VISUAL_GROUP and geom.meshname in coarse:
            geom.meshname = coarse[geom.meshname]


def arm_spec(coarse_meshes: bool = True) -> mujoco.MjSpec:
    """The SO-101 alone on a table, with lights and no cameras yet."""
    xml = so101_xml()
    spec = mujoco.MjSpec.from_file(str(xml))
    if coarse_meshes:
        use_coarse_meshes(spec, xml.parent / spec.meshdir)
    spec.visual.quality.shadowsize = 0
    spec.visual.quality.offsamples = 0
    spec.visual.global_.offwidth = 640
    spec.visual.global_.offheight = 480
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.noslip_iterations = 2
    for name in ("fixed_jaw_pad", "moving_jaw_pad"):
        pad = spec.geom(name)
        pad.contype, pad.conaffinity = 1, 1
        pad.friction = [1.5, 0.02, 0.002]
        pad.condim = 4
    world = spec.worldbody
    world.add_geom(
        name="table", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[0.6, 0.6, 0.01], pos=[0.2, 0.0, 0.0], rgba=TABLE_RGBA
    )
    for pos, diffuse in (((0.3, -0.4, 1.2), 0.6), ((0.3, 0.4, 1.2), 0.4)):
        light = world.add_light(pos=pos, dir=-np.asarray(pos) / np.linalg.norm(pos), castshadow=False)
        light.diffuse = [diffuse] * 3
    return spec


def add_camera(spec: mujoco.MjSpec, camera: CameraSpec) -> None:
    parent = spec.worldbody if camera.body is None else spec.body(camera.body)
    parent.add_camera(
        name=camera.name,
        pos=list(camera.pos),
        quat=list(look_at_quat(np.array(camera.pos), np.array(camera.target), up=None)),
        fovy=camera.fovy,
    )


def add_cube(spec: mujoco.MjSpec, name: str, half: float, rgba: tuple[float, ...], mass: float = 0.03) -> None:
    """A free cube resting on the table (its pose is set at reset)."""
    body = spec.worldbody.add_body(name=name, pos=[0.25, 0.0, half])
    body.add_freejoint(name=f"{name}_joint")
    body.add_geom(
        name=name,
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[half] * 3,
        rgba=list(rgba),
        mass=mass,
        friction=[1.2, 0.02, 0.002],
        condim=4,
    )


def add_marker(spec: mujoco.MjSpec, name: str, radius: float, rgba: tuple[float, ...], height: float = 0.001) -> None:
    """A flat disk on the table that nothing collides with (a target or a zone); moved at reset via its body."""
    body = spec.worldbody.add_body(name=name, pos=[0.25, 0.0, 0.0], mocap=True)
    body.add_geom(
        name=name,
        type=mujoco.mjtGeom.mjGEOM_CYLINDER,
        size=[radius, height, 0],
        rgba=list(rgba),
        contype=0,
        conaffinity=0,
    )
