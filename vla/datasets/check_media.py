"""Camera checks of `vla data check` (step 5 of check.py): videos and stored images.

Structure first, cheaply: every episode names a video for every camera; each video file exists, opens, has the
declared frame size, and has a frame near every timestamp that LeRobot will ask for (`from_timestamp +
timestamp`, within `tolerance_s`), read from the container's packet times without decoding. Then, with
`frames=True`, every frame is decoded once (PNG or video, or read from a valid frame cache, which was itself
decoded from these exact files), which finds undecodable images and frames, and yields the per-channel pixel
histograms that the statistics check compares with meta/stats.json. Every problem found here is an error: the
camera cannot be read as declared.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from vla.datasets.check import Problem
from vla.datasets.errors import DatasetError
from vla.datasets.lerobot_io import Episode, LeRobotSource
from vla.datasets.stats import PixelHistogram, camera_blocks

RE_RECORD = "restore the file, or re-record (or remove) the episodes it holds"


def check_cameras(source: LeRobotSource, columns: dict[str, np.ndarray] | None, problems: list[Problem],
                  frames: bool, tolerance_s: float, progress: bool) -> dict[str, PixelHistogram]:
    """Append camera problems to `problems`; returns pixel histograms of the cameras whose frames all decoded."""
    from tqdm import tqdm

    timestamps = None if columns is None else columns["timestamp"].reshape(-1).astype(np.float64)
    broken = set()
    for camera in source.video_keys:
        found = check_videos(source, camera, timestamps, tolerance_s)
        problems += found
        if found:
            broken.add(camera)
    histograms: dict[str, PixelHistogram] = {}
    if not frames or columns is None:
        return histograms
    bar = tqdm(total=source.total_frames * len(source.cameras), desc="decoding frames", unit="frame",
               disable=not progress)
    for camera in source.cameras:
        if camera in broken:
            continue
        hist = PixelHistogram()
        try:
            for block, axis in camera_blocks(source, camera, timestamps):
                hist.add(block, axis)
                bar.update(len(block))
        except DatasetError as err:
            problems.append(Problem.of(err))
            continue
        histograms[camera] = hist
    bar.close()
    return histograms


def check_videos(source: LeRobotSource, camera: str, timestamps: np.ndarray | None,
                 tolerance_s: float) -> list[Problem]:
    problems = []
    by_file: dict[str, list[Episode]] = defaultdict(list)
    missing = [ep.index for ep in source.episodes if ep.videos.get(camera) is None]
    if missing:
        problems.append(Problem(f"{source.root / 'meta' / 'episodes'} ({camera})", f"episodes {_list(missing)} have "
                                f"no video for this camera", "re-record those episodes or remove them"))
    for ep in source.episodes:
        ref = ep.videos.get(camera)
        if ref is not None:
            by_file[ref.path].append(ep)
    height, width = source.features[camera]["shape"][:2]
    for rel, episodes in by_file.items():
        path = source.root / rel
        eps = _list([ep.index for ep in episodes])
        if not path.is_file():
            problems.append(Problem(str(path), f"video file is missing (episodes {eps})", RE_RECORD))
            continue
        try:
            size, times = probe(path)
        except Exception as err:  # av raises many types for damaged files
            problems.append(Problem(str(path), f"cannot be read ({type(err).__name__}: {str(err)[:80]}); truncated "
                                    f"or damaged (episodes {eps})", RE_RECORD))
            continue
        if size != (height, width):
            problems.append(Problem(str(path), f"frames are {size[0]}x{size[1]}, info.json declares {height}x{width}",
                                    "fix the feature's shape or re-encode the video"))
        if timestamps is not None:
            problems += check_coverage(path, camera, episodes, times, timestamps, tolerance_s)
    return problems


def probe(path: Path) -> tuple[tuple[int, int], np.ndarray]:
    """(height, width) and the sorted presentation times (s) of every packet of the first video stream."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        size = (stream.codec_context.height, stream.codec_context.width)
        times = [float(p.pts * p.time_base) for p in container.demux(stream) if p.pts is not None and p.size]
    return size, np.sort(np.asarray(times, np.float64))


def check_coverage(path: Path, camera: str, episodes: list[Episode], times: np.ndarray, timestamps: np.ndarray,
                   tolerance_s: float) -> list[Problem]:
    """Every frame of `episodes` must have a video frame within `tolerance_s` of from_timestamp + timestamp."""
    problems = []
    if not len(times):
        return [Problem(str(path), "contains no video frames", RE_RECORD)]
    for ep in episodes:
        ref = ep.videos[camera]
        assert ref is not None
        query = ref.from_timestamp + timestamps[ep.start: ep.stop]
        pos = np.clip(np.searchsorted(times, query), 1, len(times) - 1)
        nearest = np.minimum(np.abs(times[pos] - query), np.abs(times[pos - 1] - query)) if len(times) > 1 \
            else np.abs(times[0] - query)
        bad = np.flatnonzero(~(nearest < tolerance_s))
        if len(bad):
            k = int(bad[0])
            problems.append(Problem(f"{path} (episode {ep.index})", f"{len(bad)} of {ep.length} frames have no video "
                                    f"frame within {tolerance_s * 1e3:.2f} ms, first frame {k} at "
                                    f"t={query[k]:.4f} s (the video's frames span {times[0]:.4f}..{times[-1]:.4f} s)",
                                    "the video is truncated or out of sync with the timestamps; re-record the "
                                    "episode"))
    return problems


def _list(values: list[int]) -> str:
    return ", ".join(str(v) for v in values[:10]) + (f" and {len(values) - 10} more" if len(values) > 10 else "")
