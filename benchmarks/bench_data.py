"""`make bench` (data): frames/s of a training-style DataLoader over one dataset read four ways, in one run.

The readers of the same episodes: LeRobotDataset with video storage (PyAV decoding, the fallback this machine
uses), LeRobotDataset with image storage (PNG in parquet), and our zarr frame cache (built from the video dataset,
as a user would) twice: as a drop-in (float32 frames, what LeRobotDataset returns) and with uint8 frames (what
`lerobot-train --policy.type=vla` uses; the conversion to float the policy then does is counted in its time).
For every combination of frame size (96x96, 224x224), cameras (1, 2) and DataLoader workers (0, 2): batch 32,
shuffle, the frames/s over `--batches` batches after warm-up batches (1, plus the 2 each worker prefetches),
measured `--repeats` times round-robin over the readers (so a burst of load on a shared machine hits all alike)
and reported as the median. `--chunk 50` adds the action window the VLA trains on (`delta_timestamps`), which
LeRobot's image path is very slow at. Also the disk size of each dataset and of the cache, and
the ratios the issue sets as targets (cache >= 5x video, >= 1x images, cache size <= image dataset size).

The episodes come from the SO-101 sim (`so101/reach`, scripted expert) rendered once at 224x224; the 96x96
datasets hold the same frames resized. Everything is written under a temporary directory and removed after.

    python benchmarks/bench_data.py [--frames 1500] [--batches 10] [--repeats 3] [--sizes 96 224]
                                    [--cameras 1 2] [--workers 0 2] [--chunk 0] [--json FILE] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla.datasets.cache import build_cache, cache_path, resize_frames
from vla.datasets.cached_dataset import CachedLeRobotDataset
from vla.datasets.writer import h264

CAMERAS = ("front", "wrist")
FPS = 30
READERS = ("LeRobot video (pyav)", "LeRobot images", "zarr cache", "zarr cache uint8")


def render(frames: int, size: int = 224, seed: int = 0) -> list[dict[str, Any]]:
    """Scripted-expert episodes of so101/reach, in memory, until `frames` frames: {cam: (T, H, W, 3), ...}."""
    from vla.envs.suite import make_env, make_expert

    env = make_env("so101/reach", image_size=(size, size))
    expert = make_expert(env)
    episodes, total = [], 0
    while total < frames:
        obs, _ = env.reset(seed=seed + len(episodes))
        expert.reset()
        images: dict[str, list] = {cam: [] for cam in CAMERAS}
        states, actions, done = [], [], False
        while not done:
            action = np.asarray(expert.act(), np.float32)
            for cam in CAMERAS:
                images[cam].append(obs["pixels"][cam])
            states.append(np.asarray(obs["agent_pos"], np.float32))
            actions.append(action)
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
        episodes.append({**{c: np.stack(v) for c, v in images.items()}, "state": np.stack(states),
                         "action": np.stack(actions), "task": env.task_description})
        total += len(states)
    env.close()
    return episodes


def write(root: Path, episodes: list[dict], size: int, cameras: int, use_videos: bool) -> Path:
    import datasets
    from lerobot.datasets import LeRobotDataset

    datasets.disable_progress_bars()
    dim = episodes[0]["state"].shape[1]
    feats: dict[str, dict] = {f"observation.images.{c}": {"dtype": "video" if use_videos else "image",
                                                          "shape": (size, size, 3), "names": ["height", "width",
                                                                                              "channels"]}
                              for c in CAMERAS[:cameras]}
    feats["observation.state"] = {"dtype": "float32", "shape": (dim,), "names": None}
    feats["action"] = {"dtype": "float32", "shape": (dim,), "names": None}
    ds = LeRobotDataset.create(repo_id="bench/data", fps=FPS, root=root, features=feats, use_videos=use_videos,
                               rgb_encoder=h264())
    ds.start_image_writer(num_processes=0, num_threads=4)
    for ep in episodes:
        frames = {c: resize_frames(ep[c], (size, size)) for c in CAMERAS[:cameras]}
        for t in range(len(ep["state"])):
            ds.add_frame({**{f"observation.images.{c}": frames[c][t] for c in frames},
                          "observation.state": ep["state"][t], "action": ep["action"][t], "task": ep["task"]})
        ds.save_episode()
    ds.finalize()
    ds.stop_image_writer()
    return root


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def to_float(batch: dict[str, Any]) -> None:
    """What the VLA policy does with uint8 frames, counted in the uint8 reader's time: scale them to [0, 1]."""
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dtype == torch.uint8:
            batch[key] = value.float().div_(255)


def frames_per_second(dataset: Any, workers: int, batches: int, seed: int = 0) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True, num_workers=workers, drop_last=True,
                                         generator=torch.Generator().manual_seed(seed),
                                         prefetch_factor=2 if workers else None)
    it = iter(loader)
    for _ in range(1 + 2 * workers):  # warm-up: worker start, file opening, and the batches prefetched meanwhile
        next(it)
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        batch = next(it)
        to_float(batch)
        n += len(batch["index"])
    elapsed = time.perf_counter() - start
    del it, loader
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1500, help="frames per dataset (whole episodes)")
    parser.add_argument("--batches", type=int, default=10, help="timed batches of 32 per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per reader (median reported)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 224])
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--chunk", type=int, default=0, help="action window in steps (the VLA trains on 50); 0: none")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--keep", type=Path, default=None, help="keep the datasets in this directory")
    args = parser.parse_args()

    import av
    from lerobot.datasets import LeRobotDataset

    av.logging.set_libav_level(av.logging.ERROR)  # libx264 prints a page of statistics per video otherwise
    # One intra-op thread, as in DataLoader workers: on a busy 2-core machine torch's OpenMP threads otherwise spin
    # against other processes and 224x224 reads with 0 workers drop to ~30 frames/s for every reader alike.
    torch.set_num_threads(1)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_data_"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    episodes = render(args.frames, max(args.sizes))
    n_frames = sum(len(ep["state"]) for ep in episodes)
    print(f"rendered {len(episodes)} episodes, {n_frames} frames, in {time.perf_counter() - start:.0f} s")
    windows = {"action": [k / FPS for k in range(args.chunk)]} if args.chunk else None
    rows, sizes = [], []
    try:
        for size in args.sizes:
            for cams in args.cameras:
                name = f"{size}px-{cams}cam"
                video = write(work / f"{name}-video", episodes, size, cams, use_videos=True)
                images = write(work / f"{name}-images", episodes, size, cams, use_videos=False)
                t0 = time.perf_counter()
                build_cache(video, progress=False)
                build_s = time.perf_counter() - t0
                sizes.append({"size": size, "cameras": cams, "video_mb": disk_mb(video), "images_mb": disk_mb(images),
                              "cache_mb": disk_mb(cache_path(video)), "cache_build_s": build_s})
                readers = {
                    READERS[0]: lambda v=video: LeRobotDataset("bench/data", root=v, video_backend="pyav",
                                                               delta_timestamps=windows),
                    READERS[1]: lambda i=images: LeRobotDataset("bench/data", root=i, delta_timestamps=windows),
                    READERS[3]: lambda v=video: CachedLeRobotDataset("bench/data", root=v, delta_timestamps=windows,
                                                                     progress=False, frame_dtype="uint8"),
                    READERS[2]: lambda v=video: CachedLeRobotDataset("bench/data", root=v, delta_timestamps=windows,
                                                                     progress=False),
                }
                for workers in args.workers:
                    row: dict[str, Any] = {"size": size, "cameras": cams, "workers": workers}
                    runs: dict[str, list[float]] = {reader: [] for reader in readers}
                    for repeat in range(args.repeats):
                        for reader, make in readers.items():
                            runs[reader].append(frames_per_second(make(), workers, args.batches, seed=repeat))
                    row.update({reader: statistics.median(v) for reader, v in runs.items()})
                    row["runs"] = runs
                    rows.append(row)
                    print(format_row(row), flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(rows, sizes, args))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "sizes": sizes, "args": vars(args) | {
            "json": str(args.json), "keep": str(args.keep)}}, indent=2))


def format_row(row: dict) -> str:
    return (f"{row['size']}x{row['size']} {row['cameras']} cam {row['workers']} workers: "
            + ", ".join(f"{r} {row[r]:.0f}/s" for r in READERS))


def table(rows: list[dict], sizes: list[dict], args: argparse.Namespace) -> str:
    video, images, cache, cache8 = READERS
    lines = [f"Frames/s (samples/s; batch 32, shuffle, action window {args.chunk}; median of {args.repeats} runs of "
             f"{args.batches} batches after warm-up):", "",
             f"| frames | cameras | workers | {video} | {images} | {cache} | {cache8} | cache / video | "
             "cache / images | uint8 / video | uint8 / images |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['size']}x{r['size']} | {r['cameras']} | {r['workers']} | {r[video]:.0f} | {r[images]:.0f}"
                     f" | {r[cache]:.0f} | {r[cache8]:.0f} | {r[cache] / r[video]:.1f}x | {r[cache] / r[images]:.1f}x |"
                     f" {r[cache8] / r[video]:.1f}x | {r[cache8] / r[images]:.1f}x |")
    lines += ["", "Disk (MB) and cache build time:", "",
              "| frames | cameras | video dataset | image dataset | zarr cache | cache / image dataset | build |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for s in sizes:
        lines.append(f"| {s['size']}x{s['size']} | {s['cameras']} | {s['video_mb']:.1f} | {s['images_mb']:.1f} | "
                     f"{s['cache_mb']:.1f} | {s['cache_mb'] / s['images_mb']:.2f} | {s['cache_build_s']:.1f} s |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
