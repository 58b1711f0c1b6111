"""The frame cache: every camera of a LeRobot v3 dataset decoded once into a zarr v3 store beside the dataset.

Layout of `<dataset>.vla-cache.zarr` (a sibling of the dataset directory, so the dataset itself is untouched):

    zarr.json                  group; attributes["vla_frame_cache"] is the manifest (below)
    frames/<camera>            (N, H, W, 3) uint8, one chunk per frame, sharded (see frame_store.py)
    data/<feature>             (N, *shape) every numeric feature of the data parquet files, native dtype

Row i of every array is dataset index i. The manifest records what the cache was made from: for each dataset file
(meta/stats.json is left out because statistics do not change samples) its size and a hash of its whole content,
and its size and modification time. Checking compares sizes and times, which costs nothing; a file whose time
changed (a copy, a `touch`, an edit) is hashed again and counts as changed only if its content did (the new
time is then recorded, so a copied dataset is hashed once). What this misses: an edit that keeps the size and
puts the old modification time back. It also records the frame size and resize method, the decoder and the
codec measurements. `cache_status` compares all that with the dataset on disk, so a cache of an older version of
the dataset, or of another size, is reported stale and rebuilt, never used. A build writes to a temporary
directory and renames it into place last, so an interrupted build never leaves a cache that looks valid.

Resizing (`--size WxH`) is done on the uint8 frames with torchvision's antialiased bilinear resize
(`resize_frames`); the cached frame equals `resize_frames` of the frame LeRobotDataset decodes, pixel for pixel.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vla.cli_args import size_wxh
from vla.datasets.errors import DatasetError
from vla.datasets.frame_store import FrameArrayWriter
from vla.datasets.lerobot_io import DEFAULT_TOLERANCE_S, LeRobotSource, dataset_files, file_fingerprint, file_stamp
from vla.files import write_json_atomic

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when the layout or the meaning of a field changes: older caches become stale
MANIFEST_KEY = "vla_frame_cache"
SUFFIX = ".vla-cache.zarr"
RESIZE_METHOD = "torchvision.transforms.v2.functional.resize(uint8, bilinear, antialias=True)"
DECODER = "pyav: frame.to_rgb().to_ndarray(), nearest frame to from_timestamp + timestamp"
LOWDIM_CHUNK_ROWS = 1 << 16


def cache_path(dataset_root: str | Path) -> Path:
    """Where the cache of `dataset_root` lives: `<parent>/<name>.vla-cache.zarr`."""
    root = Path(dataset_root).resolve()
    return root.with_name(root.name + SUFFIX)


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'128x96' (width x height, as every `vla` command takes sizes) -> (96, 128) (height, width); None or '' ->
    None (keep the dataset's size)."""
    if not text:
        return None
    try:
        return size_wxh(text)
    except ValueError as err:
        raise DatasetError("--size", str(err)) from None


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(n, H, W, 3) uint8 -> (n, h, w, 3) uint8 with antialiased bilinear resampling (the cache's resize)."""
    import torch
    from torchvision.transforms.v2 import functional as TF

    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    chw = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    out = TF.resize(chw, list(size), interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return out.permute(0, 2, 3, 1).contiguous().numpy()


def fingerprint(dataset_root: Path) -> dict[str, str]:
    """{relative path: size and content hash} of every content file of the dataset."""
    return {str(f.relative_to(dataset_root)): file_fingerprint(f) for f in dataset_files(dataset_root)}


def stamps(dataset_root: Path) -> dict[str, list[int]]:
    """{relative path: [size, mtime_ns]} of every content file of the dataset."""
    return {str(f.relative_to(dataset_root)): file_stamp(f) for f in dataset_files(dataset_root)}


def changed_files(root: Path, built: dict[str, str], built_stamps: dict[str, list[int]]
                  ) -> tuple[list[str], dict[str, list[int]]]:  # fmt: skip
    """Files added, removed or with other content than at build time, and the current stamps."""
    now = stamps(root)
    changed = sorted(set(now) ^ set(built))
    for rel in sorted(set(now) & set(built)):
        if now[rel] != built_stamps.get(rel) and file_fingerprint(root / rel) != built[rel]:
            changed.append(rel)
    return changed, now


def record_stamps(cache: Path, new_stamps: dict[str, list[int]]) -> None:
    """Best effort: remember the files' current times, so unchanged copies are not hashed again next time."""
    meta_path = cache / "zarr.json"
    try:
        meta = json.loads(meta_path.read_text())
        meta["attributes"][MANIFEST_KEY]["dataset"]["stamps"] = new_stamps
        write_json_atomic(meta_path, meta)
    except (OSError, ValueError, KeyError, TypeError):
        pass


def digest(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CacheStatus:
    state: str  # "valid", "missing" or "stale"
    reason: str
    path: Path
    manifest: dict | None = None

    @property
    def valid(self) -> bool:
        return self.state == "valid"

    @property
    def frame_size(self) -> tuple[int, int] | None:
        size = (self.manifest or {}).get("frame_size")
        return (int(size[0]), int(size[1])) if size else None


def read_manifest(cache: Path) -> dict | None:
    try:
        meta = json.loads((cache / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    manifest = meta.get("attributes", {}).get(MANIFEST_KEY)
    return manifest if isinstance(manifest, dict) else None


def cache_status(dataset_root: str | Path, cache: str | Path | None = None,
                 size: tuple[int, int] | None = None) -> CacheStatus:
    """Is there a cache for `dataset_root` that matches it as it is now (and, if given, frame `size`)?"""
    root = Path(dataset_root).resolve()
    path = Path(cache) if cache is not None else cache_path(root)
    if not path.exists():
        return CacheStatus("missing", f"no cache at {path}", path)
    manifest = read_manifest(path)
    if manifest is None:
        return CacheStatus("stale", f"{path} has no readable manifest (not a frame cache, or a damaged one)", path)
    if manifest.get("format") != CACHE_FORMAT:
        return CacheStatus("stale", f"cache format {manifest.get('format')}, this code reads {CACHE_FORMAT}", path,
                           manifest)
    if not manifest.get("complete"):
        return CacheStatus("stale", "the cache build did not finish", path, manifest)
    built, built_stamps = manifest["dataset"]["files"], manifest["dataset"].get("stamps", {})
    changed, now = changed_files(root, built, built_stamps)
    if changed:
        what = ", ".join(f"{k} ({'added' if k not in built else 'removed' if k not in now else 'changed'})"
                         for k in changed[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        return CacheStatus("stale", f"the dataset changed since the cache was built: {what}{more}", path, manifest)
    have = sorted({f"{c['shape'][0]}x{c['shape'][1]}" for c in manifest.get("cameras", {}).values()})
    if size is not None and have and have != [f"{size[0]}x{size[1]}"]:
        return CacheStatus("stale", f"the cache holds {' and '.join(have)} frames, {size[0]}x{size[1]} was asked "
                           "for", path, manifest)
    if now != built_stamps:
        record_stamps(path, now)
    return CacheStatus("valid", f"cache at {path} matches the dataset", path, manifest)


def build_cache(dataset_root: str | Path, size: tuple[int, int] | None = None, cache: str | Path | None = None,
                progress: bool = True, tolerance_s: float = DEFAULT_TOLERANCE_S) -> Path:
    """Decode every camera of the dataset once into the cache (replacing any existing one); returns its path."""
    import zarr
    from tqdm import tqdm

    root = Path(dataset_root).resolve()
    final = Path(cache) if cache is not None else cache_path(root)
    source = LeRobotSource(root)
    file_stamps = stamps(root)  # before reading, so a dataset changed during the build reads as stale afterwards
    files = fingerprint(root)
    start = time.perf_counter()
    lowdim = source.read_lowdim()
    n = len(lowdim["index"]) if "index" in lowdim else 0
    check_rows(source, lowdim, n)
    tmp = final.with_name(f".{final.name}.building-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        group = zarr.open_group(tmp, mode="w")
        cameras: dict[str, Any] = {}
        with tqdm(total=n * len(source.cameras), desc=f"caching {root.name}", unit="frame",
                  disable=not progress) as bar:
            for camera in source.cameras:
                shape = tuple(source.features[camera]["shape"])
                if len(shape) != 3 or shape[2] != 3:
                    raise DatasetError(root / "meta" / "info.json", f"camera {camera!r} has shape {shape}; the "
                                       "cache holds (H, W, 3) colour frames", "fix the feature's shape in info.json")
                frame_shape = (*size, 3) if size else shape
                writer = FrameArrayWriter(group, f"frames/{camera}", n, frame_shape, tmp)  # type: ignore[arg-type]
                for block in source.iter_frames(camera, lowdim.get("timestamp"), tolerance_s):
                    writer.append(resize_frames(block, size) if size else block)
                    bar.update(len(block))
                cameras[camera] = {"shape": list(frame_shape), "source_shape": list(shape), **writer.close()}
        for key, values in lowdim.items():
            chunks = (min(max(len(values), 1), LOWDIM_CHUNK_ROWS), *values.shape[1:])
            group.create_array(f"data/{key}", data=values, chunks=chunks)
        group.attrs[MANIFEST_KEY] = {
            "format": CACHE_FORMAT,
            "dataset": {"root": str(root), "codebase_version": source.info.get("codebase_version"),
                        "total_frames": n, "total_episodes": len(source.episodes), "fps": source.fps,
                        "fingerprint": digest(files), "files": files, "stamps": file_stamps},
            "frame_size": list(size) if size else None,
            "resize": RESIZE_METHOD if size else None,
            "decoder": DECODER,
            "tolerance_s": tolerance_s,
            "cameras": cameras,
            "lowdim": sorted(lowdim),
            "build_seconds": round(time.perf_counter() - start, 2),
            "complete": True,
        }
        _replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def check_rows(source: LeRobotSource, lowdim: dict[str, np.ndarray], n: int) -> None:
    """The cache stores row i at dataset index i: the data must be the rows 0..N-1 in order, episodes tiling them."""
    where = source.root / "data"
    if "index" not in lowdim or "timestamp" not in lowdim:
        raise DatasetError(where, "the data files have no 'index' or 'timestamp' column", "run `vla data check`")
    if not np.array_equal(lowdim["index"].reshape(-1), np.arange(n)):
        raise DatasetError(where, "the 'index' column is not 0..N-1 in file order", "run `vla data check`")
    expected = 0
    for ep in source.episodes:
        if ep.start != expected or ep.stop <= ep.start:
            raise DatasetError(source.root / "meta" / "episodes", f"episode {ep.index} spans rows "
                               f"{ep.start}..{ep.stop}, expected to start at {expected} and be non-empty",
                               "run `vla data check`")
        expected = ep.stop
    if expected != n:
        raise DatasetError(source.root / "meta" / "episodes", f"episodes cover {expected} rows, the data has {n}",
                           "run `vla data check`")


def _replace(tmp: Path, final: Path) -> None:
    """Move the finished build into place; the old cache (if any) is removed only after the new one is there."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def ensure_cache(dataset_root: str | Path, size: tuple[int, int] | None = None, cache: str | Path | None = None,
                 progress: bool = True, force: bool = False) -> tuple[Path, CacheStatus]:
    """A valid cache for the dataset (and `size`, when given): the existing one, or a fresh build.

    Returns the path and the status found before building."""
    status = cache_status(dataset_root, cache, size)
    if status.valid and not force:
        return status.path, status
    if status.state == "stale":
        log.warning("frame cache %s is stale (%s); rebuilding it", status.path, status.reason)
    if size is None:
        size = status.frame_size  # a rebuild keeps the size the user chose when making the cache
    return build_cache(dataset_root, size, cache, progress), status
