"""`CachedLeRobotDataset`: a drop-in for `LeRobotDataset` that reads camera frames from the zarr frame cache.

An item is what `LeRobotDataset.__getitem__` returns for the same index: the same keys (every feature, `task`,
`subtask` when the dataset has subtasks, `<key>_is_pad` for each `delta_timestamps` key), dtypes (float features
float32, integer features int64, bool as bool, frames float32 in [0, 1]) and shapes (frames (3, H, W), or
(T, 3, H, W) with a `delta_timestamps` window; windows clamp at episode edges and mark the clamped steps in
`*_is_pad`), and `image_transforms` applied the same way. Frames are pixel-exact: the cache holds the frames
LeRobot's PyAV decoder yields (see lerobot_io.py), converted to float the same way (`uint8 / 255`).

What is unusual:
- Low-dimensional columns are loaded whole into numpy at construction (N x D numbers, small next to frames; shared
  copy-on-write with forked DataLoader workers). Frames are never loaded whole: each item reads its frames from
  the shards with `pread`, so memory does not grow with the dataset.
- `open_dataset` picks this class or `LeRobotDataset` following `VLA_FRAME_CACHE` (auto, on, off); `vla train`
  (vla/train.py) routes LeRobot's training through it.
- `return_uint8=True` (LeRobot 0.6's flag, which `lerobot-train` always sets; or `frame_dtype="uint8"`) returns
  frames as stored, uint8 in [0, 255], instead of float32: a quarter of the bytes through DataLoader workers'
  shared memory, which at 224x224 costs more than decoding (a float32 batch of 32 frames is 19 MB of fresh shared
  memory, page-faulted in by the worker). LeRobot's training loop scales uint8 frames itself, and the VLA policy
  accepts them too. With `image_transforms`, frames are float32.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla.datasets.cache import cache_status, ensure_cache, read_manifest
from vla.datasets.errors import DatasetError
from vla.datasets.frame_store import FrameArrayReader
from vla.datasets.lerobot_io import DEFAULT_TOLERANCE_S

log = logging.getLogger(__name__)

ENV_VAR = "VLA_FRAME_CACHE"
MODES = ("auto", "on", "off")
FRAME_DTYPES = ("float32", "uint8")


def torch_dtype(dtype: np.dtype) -> np.dtype:
    """The numpy dtype of what LeRobotDataset returns for a stored dtype (it goes through Python numbers)."""
    if dtype == np.bool_:
        return np.dtype(np.bool_)
    return np.dtype(np.int64) if np.issubdtype(dtype, np.integer) else np.dtype(np.float32)


class CachedLeRobotDataset(torch.utils.data.Dataset):
    """Reads a LeRobot v3 dataset through its frame cache; builds or rebuilds the cache when it is missing or stale.

    Takes LeRobotDataset's reading arguments; `cache` and `size` choose the store and its frame size ((height, width));
    `frame_dtype` is float32 (LeRobotDataset's frames) or uint8 (the stored bytes, see the module docstring)."""

    def __init__(
        self,
        repo_id: str,
        root: str | Path | None = None,
        episodes: list[int] | None = None,
        image_transforms: Callable | None = None,
        delta_timestamps: dict[str, list[float]] | None = None,
        tolerance_s: float = DEFAULT_TOLERANCE_S,
        revision: str | None = None,
        force_cache_sync: bool = False,
        download_videos: bool = True,
        video_backend: str | None = None,
        *,
        cache: str | Path | None = None,
        size: tuple[int, int] | None = None,
        progress: bool = True,
        frame_dtype: str = "float32",
        return_uint8: bool = False,
    ):
        from lerobot.datasets import LeRobotDatasetMetadata
        from lerobot.datasets.feature_utils import check_delta_timestamps, get_delta_indices
        from lerobot.utils.constants import HF_LEROBOT_HOME

        super().__init__()
        if frame_dtype not in FRAME_DTYPES:
            raise ValueError(f"frame_dtype={frame_dtype!r} is not one of {FRAME_DTYPES}")
        if return_uint8:
            frame_dtype = "uint8"
        self.frame_dtype = "float32" if image_transforms is not None else frame_dtype  # transforms expect floats
        self.repo_id = repo_id
        self.root = Path(root) if root else HF_LEROBOT_HOME / repo_id
        self.episodes = episodes
        self.image_transforms = image_transforms
        self.delta_timestamps = delta_timestamps
        self.tolerance_s = tolerance_s
        self.revision = revision
        self.video_backend = video_backend or "frame-cache"
        self.cache_root, _ = ensure_cache(self.root, size, cache, progress=progress)
        self.meta = LeRobotDatasetMetadata(repo_id, self.root, revision)

        import zarr

        group: Any = zarr.open_group(self.cache_root, mode="r")
        manifest: dict[str, Any] = read_manifest(self.cache_root) or {}
        self.cameras: list[str] = list(manifest["cameras"])
        for cam, info in manifest["cameras"].items():  # report the cached frame size to the policy
            feature = self.meta.info["features"][cam]
            feature["shape"] = tuple(info["shape"])
            if "info" in feature:
                feature["info"]["video.height"], feature["info"]["video.width"] = info["shape"][:2]
        self._frames = {cam: FrameArrayReader(self.cache_root / "frames" / cam) for cam in self.cameras}
        self._lowdim: dict[str, np.ndarray] = {}
        for key in manifest["lowdim"]:
            values = np.asarray(group[f"data/{key}"][...])
            self._lowdim[key] = np.ascontiguousarray(values, dtype=torch_dtype(values.dtype))
        log.info("using frame cache %s (%s; %s frames) for %s", self.cache_root,
                 ", ".join(f"{c} {i['shape'][0]}x{i['shape'][1]}" for c, i in manifest["cameras"].items()),
                 self.frame_dtype, self.root)

        self._from = np.asarray(self.meta.episodes["dataset_from_index"], dtype=np.int64)
        self._to = np.asarray(self.meta.episodes["dataset_to_index"], dtype=np.int64)
        self._episode = self._lowdim["episode_index"].astype(np.int64)
        self._rows = None if episodes is None else np.flatnonzero(np.isin(self._episode, list(episodes)))
        self._task_names = [str(t) for t in self.meta.tasks.index]
        self._subtask_names = None
        if "subtask_index" in self.meta.features and self.meta.subtasks is not None:
            self._subtask_names = [str(t) for t in self.meta.subtasks.index]

        self.delta_indices: dict[str, list[int]] | None = None
        self._deltas: dict[str, np.ndarray] = {}
        if delta_timestamps is not None:
            unknown = [k for k in delta_timestamps if k not in self.meta.features]
            if unknown:
                raise DatasetError(self.root, f"delta_timestamps names {unknown}, not features of the dataset",
                                   f"features are {list(self.meta.features)}")
            check_delta_timestamps(delta_timestamps, self.fps, tolerance_s)
            self.delta_indices = get_delta_indices(delta_timestamps, self.fps)
            self._deltas = {k: np.asarray(v, dtype=np.int64) for k, v in self.delta_indices.items()}
        self._hf_dataset: Any = None

    # --- LeRobotDataset's read API ------------------------------------------------------------------------------

    @property
    def fps(self) -> int:
        return self.meta.fps

    @property
    def features(self) -> dict[str, dict]:
        return self.meta.features

    @property
    def num_frames(self) -> int:
        return len(self._episode) if self._rows is None else len(self._rows)

    @property
    def num_episodes(self) -> int:
        return len(self.episodes) if self.episodes is not None else self.meta.total_episodes

    @property
    def absolute_to_relative_idx(self) -> dict[int, int] | None:
        """Dataset index -> item position, for an episode subset (LeRobot's EpisodeAwareSampler maps with it)."""
        if self._rows is None:
            return None
        return {int(row): i for i, row in enumerate(self._rows)}

    @property
    def hf_dataset(self) -> Any:
        """LeRobot's own parquet-backed table, loaded on first use (for scripts that read it directly)."""
        if self._hf_dataset is None:
            from lerobot.datasets.feature_utils import get_hf_features_from_features
            from lerobot.datasets.io_utils import hf_transform_to_torch, load_nested_dataset

            features = {k: v for k, v in self.meta.features.items() if k not in self.meta.video_keys}
            self._hf_dataset = load_nested_dataset(self.root / "data", get_hf_features_from_features(features),
                                                   self.episodes)
            self._hf_dataset.set_transform(hf_transform_to_torch)
        return self._hf_dataset

    @property
    def hf_features(self) -> Any:
        from lerobot.datasets.feature_utils import get_hf_features_from_features

        return get_hf_features_from_features(self.meta.features)

    def __len__(self) -> int:
        return self.num_frames

    def frame(self, camera: str, row: int) -> torch.Tensor:
        """Frame of `camera` at dataset index `row`: (3, H, W) float32 in [0, 1], or uint8 with frame_dtype uint8."""
        frame = torch.from_numpy(self._frames[camera].chw(row))
        return frame if self.frame_dtype == "uint8" else frame.to(torch.float32).div_(255)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        n = self.num_frames
        if not -n <= idx < n:
            raise IndexError(f"index {idx} out of range for a dataset of {n} frames")
        idx = int(idx) % n
        row = idx if self._rows is None else int(self._rows[idx])
        item: dict[str, Any] = {key: torch.from_numpy(np.array(values[row])) for key, values in self._lowdim.items()}

        windows: dict[str, np.ndarray] = {}
        if self._deltas:
            ep = int(self._episode[row])
            start, stop = self._from[ep], self._to[ep]
            for key, deltas in self._deltas.items():
                query = row + deltas
                item[f"{key}_is_pad"] = torch.from_numpy((query < start) | (query >= stop))
                windows[key] = np.clip(query, start, stop - 1)
                if key in self._lowdim:
                    item[key] = torch.from_numpy(self._lowdim[key][windows[key]])
        for cam in self.cameras:
            if cam in windows:
                item[cam] = torch.stack([self.frame(cam, int(j)) for j in windows[cam]])
            else:
                item[cam] = self.frame(cam, row)
            if self.image_transforms is not None:
                item[cam] = self.image_transforms(item[cam])

        item["task"] = self._task_names[int(item["task_index"])]
        if self._subtask_names is not None:
            item["subtask"] = self._subtask_names[int(item["subtask_index"])]
        return item

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(repo_id={self.repo_id!r}, root={str(self.root)!r}, cache="
                f"{str(self.cache_root)!r}, episodes={self.num_episodes}, frames={self.num_frames}, "
                f"features={list(self.features)})")


def frame_cache_mode(mode: str | None = None) -> str:
    """`mode`, else $VLA_FRAME_CACHE, else "auto"; raises on anything but auto, on and off."""
    value = (mode if mode is not None else os.environ.get(ENV_VAR, "auto")).strip().lower() or "auto"
    value = {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off"}.get(value, value)
    if value not in MODES:
        raise DatasetError(ENV_VAR, f"is {value!r}", "use auto (the cache when one exists), on (build it when "
                           "missing) or off (never)")
    return value


def open_dataset(repo_id: str, root: str | Path | None = None, *, mode: str | None = None,
                 frame_dtype: str = "float32", **kwargs: Any) -> Any:
    """`CachedLeRobotDataset` or `LeRobotDataset` for the same arguments, by `mode` (default $VLA_FRAME_CACHE):

    - auto: the cache when one exists for the dataset (a stale one is rebuilt first), else LeRobotDataset;
    - on: the cache, building it when missing;
    - off: LeRobotDataset.
    A dataset asked to re-sync from the hub (`force_cache_sync`) always goes to LeRobotDataset. `frame_dtype`
    applies to the cache only; `return_uint8` to both."""
    from lerobot.datasets import LeRobotDataset
    from lerobot.utils.constants import HF_LEROBOT_HOME

    chosen = frame_cache_mode(mode)
    local = Path(root) if root else HF_LEROBOT_HOME / repo_id
    use_cache = chosen == "on" or (chosen == "auto" and cache_status(local).state != "missing")
    if not use_cache or kwargs.get("force_cache_sync") or not (local / "meta" / "info.json").is_file():
        return LeRobotDataset(repo_id, root=root, **kwargs)
    reading_args = ("episodes", "image_transforms", "delta_timestamps", "tolerance_s", "revision",
                    "force_cache_sync", "download_videos", "video_backend", "return_uint8")
    ignored = sorted(k for k in kwargs if k not in reading_args)
    if ignored:
        log.info("frame cache: ignoring %s (recording options)", ignored)
    return CachedLeRobotDataset(repo_id, root=local, frame_dtype=frame_dtype,
                                **{k: v for k, v in kwargs.items() if k in reading_args})
