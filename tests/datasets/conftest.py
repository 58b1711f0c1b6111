"""Small LeRobot v3 datasets for the dataset tests, built offline in a few seconds.

Two cameras of a non-square size (24x32, so a swapped height and width shows), episodes of different lengths
including a one-frame episode, a float64 scalar feature, two tasks, and a file layout that exercises both cases
LeRobot produces: the first episodes share one data file and one video file per camera (later episodes start
mid-video), the rest get a file each (as `vla record` writes).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from vla.datasets.writer import h264

LENGTHS = (6, 9, 4, 1, 7)  # the one-frame episode gets its own file: LeRobot 0.4.4 cannot append one to a video
SHARED = 3  # the first SHARED episodes are written in one session (one file), the rest one file each
SIZE = (24, 32)
CAMERAS = ("front", "wrist")
TASKS = ("pick up the cube", "open the drawer")
FPS = 10


def features(size: tuple[int, int] = SIZE, use_videos: bool = True) -> dict[str, dict]:
    feats: dict[str, dict] = {
        f"observation.images.{cam}": {"dtype": "video" if use_videos else "image", "shape": (*size, 3),
                                      "names": ["height", "width", "channels"]} for cam in CAMERAS
    }
    feats["observation.state"] = {"dtype": "float32", "shape": (3,), "names": ["x", "y", "z"]}
    feats["action"] = {"dtype": "float32", "shape": (3,), "names": ["x", "y", "z"]}
    feats["next.reward"] = {"dtype": "float64", "shape": (1,), "names": None}
    return feats


def frame_image(episode: int, t: int, cam: int, size: tuple[int, int], noise: bool = True) -> np.ndarray:
    """A gradient with a moving coloured square and (with `noise`) some texture: compressible, not trivially."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([(xx * 7 + t * 3) % 256, (yy * 9 + episode * 40) % 256, (xx + yy + cam * 90) % 256], -1)
    r, c = (2 + 2 * t + episode) % (h - 6), (3 + 3 * t + 5 * cam) % (w - 6)
    image[r: r + 6, c: c + 6] = (250, 30 + 40 * episode % 200, 60 * cam)
    if noise:
        image += np.random.default_rng(episode * 1000 + t * 10 + cam).integers(0, 12, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def episode_frames(episode: int, length: int, size: tuple[int, int] = SIZE) -> list[dict]:
    rng = np.random.default_rng(episode)
    frames = []
    state = rng.normal(size=3).astype(np.float32)
    for t in range(length):
        action = (state + rng.normal(scale=0.1, size=3)).astype(np.float32)
        frame = {f"observation.images.{cam}": frame_image(episode, t, i, size) for i, cam in enumerate(CAMERAS)}
        frame.update({"observation.state": state.copy(), "action": action,
                      "next.reward": np.array([rng.normal()], np.float64), "task": TASKS[episode % 2]})
        frames.append(frame)
        state = action
    return frames


def build_dataset(root: Path, lengths: tuple[int, ...] = LENGTHS, use_videos: bool = True,
                  size: tuple[int, int] = SIZE) -> Path:
    import av
    import datasets
    from lerobot.datasets import LeRobotDataset

    from vla.datasets.writer import EpisodeWriter

    av.logging.set_libav_level(av.logging.ERROR)
    datasets.disable_progress_bars()
    feats = features(size, use_videos)
    ds = LeRobotDataset.create(repo_id="local/test", fps=FPS, root=root, features=feats, use_videos=use_videos,
                               robot_type="test", rgb_encoder=h264())
    for e, n in enumerate(lengths[:SHARED]):
        for frame in episode_frames(e, n, size):
            ds.add_frame(frame)
        ds.save_episode()
    ds.finalize()
    with EpisodeWriter(root, "local/test", FPS, feats, resume=True, use_videos=use_videos) as writer:
        for e, n in enumerate(lengths[SHARED:], start=SHARED):
            for frame in episode_frames(e, n, size):
                writer.add(frame)
            writer.save()
    return root


@pytest.fixture(scope="session")
def video_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_dataset(tmp_path_factory.mktemp("video") / "ds")


@pytest.fixture(scope="session")
def image_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_dataset(tmp_path_factory.mktemp("image") / "ds", use_videos=False)


@pytest.fixture
def fresh_copy(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Copy a session dataset to a private place that a test may change (and build caches beside)."""

    def copy(src: Path) -> Path:
        dst = tmp_path / "copy" / src.name
        shutil.copytree(src, dst)
        return dst

    return copy
