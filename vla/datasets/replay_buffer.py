"""Convert between LeRobot v3 datasets and the zarr replay buffer of Diffusion Policy and UMI.

Replay buffer layout (what `diffusion_policy.common.replay_buffer.ReplayBuffer` reads):

    data/<key>          (N, ...) one array per quantity, all episodes concatenated; images (N, H, W, 3) uint8
    meta/episode_ends   (E,) int64, the exclusive end row of each episode

LeRobot -> zarr writes that, plus what a LeRobot dataset needs and the layout has no place for, in the root group's
attributes: `fps`, `robot_type`, `tasks` (the instructions, with a per-frame `data/task_index`) and `lerobot`
(each array's feature name, dtype, shape and names). `data/timestamp` carries LeRobot's timestamps. Keys are the
feature names without their `observation.` / `observation.images.` prefix (`state`, `front`, `action`). The
default is zarr format 2, which the zarr 2.x library that Diffusion Policy and UMI pin can open.

zarr -> LeRobot uses those attributes when present, so a round trip is exact: numeric data bit for bit, and
frames pixel for pixel with image storage (video storage re-encodes, which is lossy). A replay buffer from
elsewhere is mapped by rule: `action` -> action; (N, H, W, 3) uint8 arrays -> cameras
`observation.images.<key>`; `state` -> observation.state; other numeric arrays -> `observation.<key>`;
`timestamp` (wall-clock time in real-world buffers) is dropped. `key_map` ("key=feature", feature "" drops)
overrides the rule; fps and the instruction come from the command line when the buffer does not carry them.
Both directions write to a temporary directory and rename it at the end, so an interrupted run leaves nothing.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vla.datasets.errors import DatasetError, reading
from vla.datasets.lerobot_io import LeRobotSource
from vla.datasets.writer import h264

IMAGE_PREFIX, OBS_PREFIX = "observation.images.", "observation."
DERIVED = ("frame_index", "episode_index", "index", "task_index", "timestamp")  # LeRobot recomputes these
CHUNK_ROWS = 10_000


def short_key(feature: str) -> str:
    for prefix in (IMAGE_PREFIX, OBS_PREFIX):
        if feature.startswith(prefix):
            return feature[len(prefix):]
    return feature


# --- LeRobot -> zarr ----------------------------------------------------------------------------------------------


def lerobot_to_zarr(src: str | Path, dst: str | Path, zarr_format: int = 2, progress: bool = True) -> Path:
    """Write the LeRobot v3 dataset at `src` as a replay buffer at `dst` (which must not exist)."""
    import zarr
    from tqdm import tqdm

    from vla.datasets.cache import check_rows

    source, dst = LeRobotSource(src), Path(dst)
    _refuse_existing(dst)
    lowdim = source.read_lowdim()
    n = len(lowdim["index"])
    check_rows(source, lowdim, n)
    keys = [k for k in source.features if k not in DERIVED and source.features[k]["dtype"] != "string"]
    names = {k: short_key(k) for k in keys}
    if len(set(names.values())) < len(names):  # e.g. both observation.state and state: keep full names
        names = {k: k for k in keys}
    tasks = source.task_names()
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        root = zarr.open_group(tmp, mode="w", zarr_format=zarr_format)  # type: ignore[arg-type]
        for key in keys:
            if key in source.cameras:
                continue
            _write(root, f"data/{names[key]}", lowdim[key], zarr_format)
        _write(root, "data/timestamp", lowdim["timestamp"], zarr_format)
        _write(root, "data/task_index", lowdim["task_index"].astype(np.int64), zarr_format)
        _write(root, "meta/episode_ends", np.array([ep.stop for ep in source.episodes], np.int64), zarr_format)
        bar = tqdm(total=n * len(source.cameras), desc="writing frames", unit="frame", disable=not progress)
        for cam in source.cameras:
            h, w, c = source.features[cam]["shape"]
            array = _create(root, f"data/{names[cam]}", (n, h, w, c), np.dtype(np.uint8), (1, h, w, c), zarr_format)
            start = 0
            for block in source.iter_frames(cam, lowdim["timestamp"]):
                array[start: start + len(block)] = block
                start += len(block)
                bar.update(len(block))
        bar.close()
        root.attrs.update({
            "fps": source.fps, "robot_type": source.info.get("robot_type"), "tasks": tasks,
            "lerobot": {"codebase_version": source.info.get("codebase_version"), "features": {
                names[k]: {"name": k, "dtype": source.features[k]["dtype"], "shape": list(source.features[k]["shape"]),
                           "names": source.features[k].get("names")} for k in keys}},
        })  # fmt: skip
        tmp.rename(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def _create(root: Any, name: str, shape: tuple, dtype: np.dtype, chunks: tuple, zarr_format: int) -> Any:
    import numcodecs
    from zarr.codecs import ZstdCodec

    compressor = numcodecs.Blosc("zstd", 3, numcodecs.Blosc.NOSHUFFLE) if zarr_format == 2 else ZstdCodec(level=3)
    return root.create_array(name, shape=shape, dtype=dtype, chunks=chunks, compressors=[compressor])


def _write(root: Any, name: str, values: np.ndarray, zarr_format: int) -> None:
    chunks = (max(1, min(len(values), CHUNK_ROWS)), *values.shape[1:])
    _create(root, name, values.shape, values.dtype, chunks, zarr_format)[...] = values


def _refuse_existing(dst: Path) -> None:
    if dst.exists():
        raise DatasetError(dst, "already exists", "choose a new output path or remove it first")


# --- zarr -> LeRobot ----------------------------------------------------------------------------------------------


@dataclass
class ReplayBuffer:
    """An opened replay buffer: arrays (lazy zarr), episode ends, and what its attributes say."""

    path: Path
    arrays: dict[str, Any]
    episode_ends: np.ndarray
    attrs: dict

    @property
    def n_frames(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0


def open_replay_buffer(path: str | Path) -> ReplayBuffer:
    """Open and validate a replay buffer (directory store, or a `.zip` store as UMI writes)."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise DatasetError(path, "does not exist", "pass the .zarr directory (or .zarr.zip) of the replay buffer")
    if path.is_dir() and not any((path / name).is_file() for name in ("zarr.json", ".zgroup")):
        raise DatasetError(path, "is not a replay buffer: no zarr group here (zarr.json or .zgroup)",
                           "pass the .zarr directory (or .zarr.zip) of the replay buffer")
    with reading(path, fix="is it a zarr replay buffer (data/ and meta/episode_ends)?"):
        store = zarr.storage.ZipStore(path, mode="r") if path.suffix == ".zip" else path
        root: Any = zarr.open_group(store, mode="r")
        data = root.get("data")
        meta = root.get("meta")
        attrs = dict(root.attrs)
    if data is None or meta is None or "episode_ends" not in meta:
        raise DatasetError(path, "is not a replay buffer: it needs a data/ group and meta/episode_ends",
                           "this converter reads the Diffusion Policy / UMI layout")
    with reading(path / "meta" / "episode_ends"):
        ends = np.asarray(meta["episode_ends"][...])
        arrays = {name: data[name] for name in sorted(data.array_keys())}
    if ends.ndim != 1 or not np.issubdtype(ends.dtype, np.integer):
        raise DatasetError(path / "meta" / "episode_ends", f"is {ends.dtype} {ends.shape}, expected (E,) integers")
    if len(ends) and (ends[0] < 0 or (np.diff(ends) < 0).any()):
        raise DatasetError(path / "meta" / "episode_ends", "is not non-decreasing from 0", "the file is damaged")
    n = int(ends[-1]) if len(ends) else 0
    for name, array in arrays.items():
        if array.shape[0] != n:
            raise DatasetError(path / "data" / name, f"has {array.shape[0]} rows, episode_ends says {n}",
                               "every data/ array must hold one row per frame")
    return ReplayBuffer(path, arrays, ends.astype(np.int64), attrs)


def plan_features(buffer: ReplayBuffer, key_map: dict[str, str] | None = None,
                  use_videos: bool = False) -> dict[str, str]:
    """{zarr key: LeRobot feature name} for every array that becomes a feature."""
    known = buffer.attrs.get("lerobot", {}).get("features", {})
    plan: dict[str, str] = {}
    for key, array in buffer.arrays.items():
        if key in ("task_index", "timestamp"):
            continue
        dtype, shape = np.dtype(array.dtype), tuple(array.shape[1:])
        if key in known:
            plan[key] = known[key]["name"]
        elif key == "action":
            plan[key] = "action"
        elif len(shape) == 3 and shape[2] == 3:
            if dtype != np.uint8:
                raise DatasetError(buffer.path / "data" / key, f"looks like images ({shape}) but is {dtype}",
                                   "images must be uint8; convert the array, or --map it to a feature name")
            plan[key] = IMAGE_PREFIX + key
        else:
            plan[key] = OBS_PREFIX + key
        if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
            raise DatasetError(buffer.path / "data" / key, f"has dtype {dtype}, not numbers",
                               f"drop it with --map {key}=")
    for key, feature in (key_map or {}).items():
        if key not in buffer.arrays:
            raise DatasetError(buffer.path / "data", f"has no array {key!r} (--map {key}=...)",
                               f"arrays are {list(buffer.arrays)}")
        if feature:
            plan[key] = feature
        else:
            plan.pop(key, None)
    return plan


def zarr_to_lerobot(src: str | Path, dst: str | Path, fps: int | None = None, task: str | None = None,
                    repo_id: str | None = None, use_videos: bool = False, key_map: dict[str, str] | None = None,
                    skip_empty: bool = False, robot_type: str | None = None, progress: bool = True) -> Path:
    """Write the replay buffer at `src` as a LeRobot v3 dataset at `dst` (image storage unless `use_videos`)."""
    import datasets
    from lerobot.datasets import LeRobotDataset
    from tqdm import tqdm

    datasets.disable_progress_bars()  # one "Map" bar per saved episode otherwise
    buffer, dst = open_replay_buffer(src), Path(dst)
    _refuse_existing(dst)
    fps = fps or buffer.attrs.get("fps")
    if not fps:
        raise DatasetError(buffer.path, "does not record its frame rate", "pass --fps")
    tasks, task_index = _tasks(buffer, task)
    plan = plan_features(buffer, key_map, use_videos)
    known = buffer.attrs.get("lerobot", {}).get("features", {})
    features = {}
    for key, name in plan.items():
        array = buffer.arrays[key]
        shape = tuple(array.shape[1:]) or (1,)
        if name.startswith(IMAGE_PREFIX) or known.get(key, {}).get("dtype") in ("image", "video"):
            features[name] = {"dtype": "video" if use_videos else "image", "shape": shape,
                              "names": ["height", "width", "channels"]}
        else:
            features[name] = {"dtype": str(np.dtype(array.dtype)), "shape": shape,
                              "names": known.get(key, {}).get("names")}
    starts = np.concatenate([[0], buffer.episode_ends[:-1]])
    empty = np.flatnonzero(buffer.episode_ends == starts)
    if len(empty) and not skip_empty:
        raise DatasetError(buffer.path / "meta" / "episode_ends", f"episodes {empty[:10].tolist()} are empty (an end "
                           "equals the previous one); LeRobot cannot store an empty episode", "pass --skip-empty")
    timestamps = buffer.arrays.get("timestamp") if "lerobot" in buffer.attrs else None
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        ds = LeRobotDataset.create(repo_id=repo_id or f"local/{dst.name}", fps=int(fps), root=tmp, features=features,
                                   robot_type=robot_type or buffer.attrs.get("robot_type"), use_videos=use_videos,
                                   rgb_encoder=h264())  # fmt: skip
        for e in tqdm(range(len(starts)), desc="converting episodes", unit="ep", disable=not progress):
            s, t = int(starts[e]), int(buffer.episode_ends[e])
            if s == t:
                continue
            with reading(buffer.path / "data"):
                columns = {key: np.asarray(buffer.arrays[key][s:t]) for key in plan}
                stamps = None if timestamps is None else np.asarray(timestamps[s:t])
            for i in range(t - s):
                frame: dict[str, Any] = {plan[k]: v[i] if v.ndim > 1 else v[i: i + 1] for k, v in columns.items()}
                frame["task"] = tasks[int(task_index[s + i])]
                ds.add_frame(frame)
                if stamps is not None:  # add_frame takes no "timestamp" (0.6.1 writes frame_index / fps): set it
                    ds.writer.episode_buffer["timestamp"][-1] = float(stamps[i])
            ds.save_episode()
        ds.finalize()
        tmp.rename(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def _tasks(buffer: ReplayBuffer, task: str | None) -> tuple[list[str], np.ndarray]:
    """(task strings, per-frame task index)."""
    n = buffer.n_frames
    if task:
        return [task], np.zeros(n, np.int64)
    tasks = buffer.attrs.get("tasks")
    if tasks and "task_index" in buffer.arrays:
        index = np.asarray(buffer.arrays["task_index"][...]).astype(np.int64).reshape(-1)
        if len(index) and (index.min() < 0 or index.max() >= len(tasks)):
            raise DatasetError(buffer.path / "data" / "task_index", f"refers to task {int(index.max())}, the buffer "
                               f"lists {len(tasks)} tasks", "pass --task to give one instruction to every episode")
        return [str(t) for t in tasks], index
    raise DatasetError(buffer.path, "carries no instructions", 'pass --task "the instruction" for every episode')
