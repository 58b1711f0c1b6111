"""The MuJoCo world below both the simulation envs and the virtual arm's twin.

`gl` is the one place MuJoCo is imported (it picks the offscreen OpenGL backend first), `assets` finds the SO-101
MJCF, `meshes` reads its STL files, `scene` builds the arm and the table with cameras, cubes and markers.
`vla.envs` builds gym tasks on top of it; `vla.hardware.virtual` stands servos on the same arm. Nothing here
imports gymnasium, torch or LeRobot.
"""
