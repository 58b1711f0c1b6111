"""Exact dataset statistics (min, max, mean, std, count and the quantiles q01 q10 q50 q90 q99), pooled over one
or more datasets, in LeRobot's stats.json format.

Why recompute: LeRobot 0.4.4 aggregates per-episode statistics, and two of its aggregates are wrong on real data
(measured on a 30-episode `vla record` dataset): a quantile of the whole dataset is taken as the count-weighted
mean of the episodes' quantiles (observation.state q01 -16.9 where the data's is -55.0, so quantile
normalisation would clip a fifth of the range), and image std comes out near 0.002 where the pixels' is 0.18.

How:
- Numeric features: every value is read (they are small) and reduced in float64; quantiles with
  `np.quantile(method="linear")`. Scalar features give shape (1,) statistics, as LeRobot writes them.
- Cameras: a 256-bin histogram per channel over every pixel of every frame, which gives min, max, mean, std and
  quantiles exactly (the quantile is the smallest pixel value whose cumulative share reaches q, i.e. numpy's
  "inverted_cdf"), in [0, 1], shape (3, 1, 1); count is the number of frames. Frames come from the frame cache when
  a valid one at the dataset's own size exists (much faster than decoding video), else from the dataset.
- Several datasets are pooled exactly: values are concatenated and histograms added, so merged statistics are the
  statistics of the union, quantiles included (averaging per-dataset statistics cannot give that).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vla.datasets.cache import cache_status
from vla.datasets.errors import DatasetError
from vla.datasets.frame_store import FrameArrayReader
from vla.datasets.lerobot_io import LeRobotSource
from vla.files import write_json_atomic

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
Stats = dict[str, dict[str, np.ndarray]]


def lowdim_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """(N, *shape) -> statistics of shape `shape`, or (1,) for a scalar feature."""
    if len(values) == 0:
        raise ValueError("no values")
    x = values.astype(np.float64).reshape(len(values), -1) if values.ndim > 1 else values.astype(np.float64)[:, None]
    shape = values.shape[1:] or (1,)
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}
    for key, q in QUANTILES.items():
        out[key] = np.quantile(x, q, axis=0)
    return {k: v if k == "count" else v.reshape(shape) for k, v in out.items()}


class PixelHistogram:
    """Per-channel counts of the 256 pixel values, over any number of (n, H, W, 3) uint8 frame blocks."""

    def __init__(self) -> None:
        self.counts = np.zeros((3, 256), np.int64)
        self.frames = 0

    def add(self, frames: np.ndarray, channel_axis: int = -1) -> None:
        for c in range(3):
            self.counts[c] += np.bincount(np.take(frames, c, axis=channel_axis).ravel(), minlength=256)
        self.frames += len(frames)

    def stats(self) -> dict[str, np.ndarray]:
        values = np.arange(256) / 255.0
        total = self.counts.sum(1)
        if not total.all():
            raise ValueError("no pixels")
        mean = (self.counts * values).sum(1) / total
        var = (self.counts * (values[None] - mean[:, None]) ** 2).sum(1) / total
        cdf = np.cumsum(self.counts, 1) / total[:, None]
        present = self.counts > 0
        out = {
            "min": values[present.argmax(1)],
            "max": values[255 - present[:, ::-1].argmax(1)],
            "mean": mean,
            "std": np.sqrt(var),
        }
        for key, q in QUANTILES.items():
            out[key] = values[np.array([np.searchsorted(cdf[c], q - 1e-12) for c in range(3)])]
        stats = {k: v.reshape(3, 1, 1) for k, v in out.items()}
        stats["count"] = np.array([self.frames])
        return stats


def camera_blocks(source: LeRobotSource, camera: str, timestamps: np.ndarray | None = None,
                  block: int = 256) -> Iterator[tuple[np.ndarray, int]]:
    """Every frame of `camera` as (blocks, channel axis): from a valid same-size frame cache, else decoded."""
    status = cache_status(source.root)
    cams = (status.manifest or {}).get("cameras", {})
    if status.valid and camera in cams and cams[camera]["shape"] == list(source.features[camera]["shape"]):
        reader = FrameArrayReader(status.path / "frames" / camera)
        for start in range(0, len(reader), block):
            yield np.stack([reader.chw(i) for i in range(start, min(start + block, len(reader)))]), 1
        reader.close()
        return
    for frames in source.iter_frames(camera, timestamps):
        yield frames, -1


def compute_stats(roots: list[str | Path], images: bool = True, progress: bool = True) -> Stats:
    """Statistics of every numeric feature and (with `images`) camera, pooled over the datasets at `roots`."""
    from tqdm import tqdm

    sources = [LeRobotSource(r) for r in roots]
    shapes: dict[str, tuple] = {}
    for source in sources:
        for key, ft in source.features.items():
            shape = tuple(ft["shape"])
            if shapes.setdefault(key, shape) != shape:
                raise DatasetError(source.root, f"feature {key!r} has shape {shape} here and {shapes[key]} in "
                                   f"{sources[0].root}", "statistics can only pool features of the same shape")
    stats: Stats = {}
    for key in dict.fromkeys(k for s in sources for k in s.lowdim_keys()):
        parts = [(s, s.read_lowdim([key])[key]) for s in sources if key in s.lowdim_keys()]
        for source, values in parts:
            bad = ~np.isfinite(values.reshape(len(values), -1).astype(np.float64)).all(1)
            if bad.any():
                raise DatasetError(f"{source.root} ({key})", f"NaN or inf in {int(bad.sum())} frames, first at "
                                   f"{source.locate(int(np.flatnonzero(bad)[0]))}; statistics would be NaN",
                                   "fix or drop those episodes (`vla data check` lists them)")
        stats[key] = lowdim_stats(np.concatenate([values for _, values in parts]))
    if images:
        cameras = list(dict.fromkeys(c for s in sources for c in s.cameras))
        total = sum(s.total_frames for s in sources for c in cameras if c in s.cameras)
        bar = tqdm(total=total, desc="image statistics", unit="frame", disable=not progress)
        for camera in cameras:
            hist = PixelHistogram()
            for source in sources:
                if camera in source.cameras:
                    timestamps = source.read_lowdim(["timestamp"])["timestamp"] if camera in source.video_keys \
                        else None
                    for frames, axis in camera_blocks(source, camera, timestamps):
                        hist.add(frames, axis)
                        bar.update(len(frames))
            stats[camera] = hist.stats()
        bar.close()
    return stats


def write_stats(stats: Stats, path: Path) -> None:
    """Write LeRobot's stats.json format (nested lists) to `path`."""
    payload = {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}
    write_json_atomic(path, payload, indent=4)


def read_stats(path: Path) -> Stats:
    import json

    from vla.datasets.errors import reading

    with reading(path, fix="recompute it with `vla data stats DIR --write`"):
        raw = json.loads(path.read_text())
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise DatasetError(path, "is not a {feature: {statistic: values}} mapping",
                           "recompute it with `vla data stats DIR --write`")
    try:
        return {k: {s: np.asarray(v, dtype=np.float64) for s, v in d.items()} for k, d in raw.items()}
    except (TypeError, ValueError) as err:
        raise DatasetError(path, f"holds values that are not numbers ({err})",
                           "recompute it with `vla data stats DIR --write`") from None


def format_stats(stats: Stats) -> str:
    """A compact table: one line per feature with its mean, std, q01 and q99 (first dimensions)."""
    lines = []
    for key, d in stats.items():
        def short(name: str, d: dict = d) -> str:
            v = np.asarray(d[name]).ravel()
            shown = ", ".join(f"{x:.4g}" for x in v[:4]) + (", ..." if len(v) > 4 else "")
            return f"{name}=[{shown}]"

        lines.append(f"{key} (count {int(np.asarray(d['count']).ravel()[0])}): "
                     + " ".join(short(n) for n in ("mean", "std", "q01", "q99")))
    return "\n".join(lines)
