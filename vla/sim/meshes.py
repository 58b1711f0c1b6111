"""Coarse copies of the SO-101 meshes for the cameras.

The shipped STL meshes have about 160k triangles in view; software rasterisation (EGL or OSMesa on a CPU) then
costs about 45 ms per 96x96 frame, most of it transforming vertices that land on a handful of pixels. Vertex
clustering on a few-millimetre grid keeps the silhouette and drops that to a few ms. Only the visual geoms use the
coarse meshes; contacts still use the original meshes' convex hulls.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

STL_TRIANGLE = np.dtype([("normal", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")])


def read_stl(path: Path) -> np.ndarray:
    """Triangles (T, 3, 3) of a binary STL file."""
    raw = path.read_bytes()
    if len(raw) < 84:
        raise ValueError(f"{path}: too short to be a binary STL file")
    count = int(np.frombuffer(raw, "<u4", count=1, offset=80)[0])
    if len(raw) != 84 + count * STL_TRIANGLE.itemsize:
        raise ValueError(f"{path}: not a binary STL file (size does not match its {count} triangles)")
    return np.frombuffer(raw, STL_TRIANGLE, count=count, offset=84)["v"].astype(np.float64)


def cluster(triangles: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertex clustering: merge vertices that share a `cell`-sized grid cell; returns (vertices, faces)."""
    verts = triangles.reshape(-1, 3)
    keys = np.floor(verts / cell).astype(np.int64)
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    n = int(inverse.max()) + 1
    merged = np.zeros((n, 3))
    np.add.at(merged, inverse, verts)
    merged /= np.bincount(inverse, minlength=n)[:, None]
    faces = inverse.reshape(-1, 3)
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    _, first = np.unique(np.sort(faces, axis=1), axis=0, return_index=True)
    return merged, faces[np.sort(first)]
