"""Crash-safe episode writing to a LeRobot v3 dataset.

LeRobot 0.6 keeps its parquet writers open until `finalize()`; a dataset whose process dies before that has
files without footers and does not load. `EpisodeWriter` therefore finalizes after every saved episode, so a crash
(even SIGKILL), Ctrl-C or SIGTERM loses at most the episode in progress, and continues with
`LeRobotDataset.resume()`, LeRobot's own way to append to a dataset (the next episode goes to new data, metadata
and video files). Opening an existing dataset appends to it after checking its features match. Videos are H.264
(`RGBEncoderConfig(vcodec="h264")`): fast to encode and decodable everywhere.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


def h264() -> Any:
    """LeRobot's video encoder settings for H.264 (its default is AV1, slow to encode on a small CPU)."""
    from lerobot.configs import RGBEncoderConfig

    return RGBEncoderConfig(vcodec="h264")


class EpisodeWriter:
    """Append episodes frame by frame: `add(frame)` ..., then `save()` or `discard()`; use as a context manager."""

    def __init__(
        self,
        root: str | Path,
        repo_id: str,
        fps: int,
        features: dict[str, dict],
        robot_type: str | None = None,
        resume: bool = False,
        use_videos: bool = True,
    ):
        import av
        from lerobot.datasets import LeRobotDataset

        av.logging.set_libav_level(av.logging.ERROR)  # libx264 prints a page of statistics per video otherwise
        self.root, self.repo_id = Path(root), repo_id
        if not use_videos:  # image storage: frames go to PNG files inside the parquet data
            features = {k: {**ft, "dtype": "image"} if ft["dtype"] == "video" else ft for k, ft in features.items()}
        self.pending = 0
        if resume and (self.root / "meta" / "info.json").is_file():
            self._remove_unsaved_frames()
            self.dataset = self._open()
            self._check_compatible(features, fps)
        else:
            if self.root.exists():
                if resume:  # an empty or half-created directory: nothing to resume from
                    shutil.rmtree(self.root)
                else:
                    raise FileExistsError(f"{self.root} already exists; pass --resume to append to it")
            self.dataset = LeRobotDataset.create(
                repo_id=repo_id, fps=fps, root=self.root, features=features, robot_type=robot_type,
                use_videos=use_videos, rgb_encoder=h264(),
            )  # fmt: skip

    def _remove_unsaved_frames(self) -> None:
        """Drop what a killed process left of an unsaved episode: its frame images (LeRobot would encode them into
        the next episode with the same index) and half-encoded temporary videos."""
        shutil.rmtree(self.root / "images", ignore_errors=True)
        for tmp in self.root.glob("tmp*"):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)

    def _open(self):
        from lerobot.datasets import LeRobotDataset

        return LeRobotDataset.resume(self.repo_id, root=self.root, rgb_encoder=h264())

    def _check_compatible(self, features: dict[str, dict], fps: int) -> None:
        have = self.dataset.meta
        problems = []
        if have.fps != fps:
            problems.append(f"fps {have.fps} on disk, {fps} requested")
        for key, ft in features.items():
            if key not in have.features:
                problems.append(f"feature '{key}' missing on disk")
            elif tuple(have.features[key]["shape"]) != tuple(ft["shape"]):
                problems.append(f"'{key}' has shape {tuple(have.features[key]['shape'])} on disk, {ft['shape']} now")
        if problems:
            raise ValueError(f"cannot append to {self.root}: " + "; ".join(problems))

    @property
    def num_episodes(self) -> int:
        return int(self.dataset.meta.total_episodes)

    def add(self, frame: dict[str, Any]) -> None:
        self.dataset.add_frame(frame)
        self.pending += 1

    def discard(self) -> None:
        if self.pending:
            self.dataset.clear_episode_buffer()
        self.pending = 0

    def save(self) -> None:
        """Write the buffered episode and make the dataset loadable as it stands."""
        import datasets

        if not self.pending:
            raise ValueError("no frames to save in this episode")
        datasets.disable_progress_bars()  # one "Map" bar per episode otherwise (LeRobot re-enables them on load)
        self.dataset.save_episode()
        self.pending = 0
        self.dataset.finalize()
        self.dataset = self._open()

    def close(self) -> None:
        self.discard()
        self.dataset.finalize()

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
