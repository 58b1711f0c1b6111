"""A small, learnable LeRobot v3 dataset generated offline: "move to the red/blue square".

Each episode shows two coloured squares (near two of four fixed spots) and a white agent dot on a black image.
The instruction names one of the squares; the 2-D agent position (the state) moves a fixed fraction of the way
to the named square each step, and the action is the next position. Solving it needs the image (where the
squares are) and the language (which one), so it exercises every input of the VLA while staying small enough
for a CPU in seconds to minutes. Used by the tests and by `make demo`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vla.datasets.writer import h264

COLOURS = {"red": (230, 40, 40), "blue": (40, 80, 230)}
PHRASES = ("move to the {} square", "go to the {} square", "reach the {} one")
SPOTS = np.array([[-0.6, -0.6], [-0.6, 0.6], [0.6, -0.6], [0.6, 0.6]])  # squares sit near two of these
CAMERA = "observation.images.front"


def features(image_size: int) -> dict[str, dict]:
    return {
        CAMERA: {"dtype": "video", "shape": (image_size, image_size, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
    }


def render(size: int, squares: dict[str, np.ndarray], agent: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8; positions are in [-1, 1]^2."""
    image = np.zeros((size, size, 3), dtype=np.uint8)
    half = max(2, size // 12)

    def pixel(p: np.ndarray) -> tuple[int, int]:
        col, row = ((p + 1) / 2 * (size - 1)).round().astype(int)
        return int(row), int(col)

    for name, pos in squares.items():
        r, c = pixel(pos)
        image[max(0, r - half): r + half + 1, max(0, c - half): c + half + 1] = COLOURS[name]
    r, c = pixel(agent)
    image[max(0, r - 1): r + 2, max(0, c - 1): c + 2] = 255
    return image


def episode(rng: np.random.Generator, length: int, size: int) -> tuple[str, list[dict]]:
    corners = rng.permutation(SPOTS)[: len(COLOURS)] + rng.uniform(-0.05, 0.05, (len(COLOURS), 2))
    squares = {name: pos.astype(np.float32) for name, pos in zip(COLOURS, corners, strict=True)}
    target_name = str(rng.choice(list(COLOURS)))
    task = str(rng.choice(PHRASES)).format(target_name)
    agent = rng.uniform(-0.9, 0.9, 2).astype(np.float32)
    frames = []
    for _ in range(length):
        nxt = (agent + 0.15 * (squares[target_name] - agent)).astype(np.float32)
        frames.append({CAMERA: render(size, squares, agent), "observation.state": agent.copy(), "action": nxt,
                       "task": task})
        agent = nxt
    return task, frames


def make_dataset(root: str | Path, episodes: int = 8, length: int = 30, image_size: int = 32, fps: int = 10,
                 seed: int = 0, use_videos: bool = True, repo_id: str = "local/vla-synthetic") -> Path:
    """Write the dataset under `root` (which must not exist) and return its path."""
    from lerobot.datasets import LeRobotDataset

    root = Path(root)
    feats = features(image_size)
    if not use_videos:
        feats[CAMERA]["dtype"] = "image"
    ds = LeRobotDataset.create(repo_id=repo_id, fps=fps, root=root, features=feats, use_videos=use_videos,
                               robot_type="point2d", rgb_encoder=h264())
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    for _ in tqdm(range(episodes), desc="recording episodes", unit="ep", leave=False):
        _, frames = episode(rng, length, image_size)
        for frame in frames:
            ds.add_frame(frame)
        ds.save_episode()
    ds.finalize()
    return root
