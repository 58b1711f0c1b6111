"""`vla data ...`: frame cache, checks, contact sheet, statistics, conversion of datasets. Thin calls into vla.datasets.

    vla data cache DIR [--size WxH] [--force]        decode every camera once into DIR.vla-cache.zarr
    vla data check DIR [--no-frames] [--no-stats]    list every error and warning; exit 1 on an error
                   [--strict]                     (with --strict on a warning too)
    vla data look DIR [--out PNG] [--per-task N]     a sheet of the stored frames, a few episodes of every task
    vla data stats DIR [DIR ...] [--write] [--out F] exact statistics, pooled over several datasets
    vla data convert SRC DST [--fps N] [--task T]    LeRobot v3 <-> zarr replay buffer (direction from SRC)

`add_parsers(subparsers)` adds the `data` command to the `vla` parser and `run(args)` executes it, returning the
exit code. Bad input ends in one line naming the file, episode or feature and what to do (a `DatasetError`), not
a traceback; anything unexpected prints its type and message, with the traceback when VLA_DEBUG=1.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from vla.datasets.errors import DatasetError

COMMANDS = ("data",)


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="dataset tools: frame cache, check, contact sheet, statistics, "
                                  "conversion")
    sub = data.add_subparsers(dest="data_command", required=True)

    cache = sub.add_parser("cache", help="decode every camera once into a zarr frame cache beside the dataset")
    cache.add_argument("dataset", type=Path, help="LeRobot v3 dataset directory")
    cache.add_argument("--size", default=None, help="WxH to resize frames to (default: the dataset's size)")
    cache.add_argument("--force", action="store_true", help="rebuild even when the cache is up to date")
    cache.add_argument("--status", action="store_true", help="only report whether the cache is valid")

    check = sub.add_parser("check", help="validate a dataset; prints every problem with its location")
    check.add_argument("dataset", type=Path)
    check.add_argument("--no-frames", action="store_true", help="skip decoding every frame (faster)")
    check.add_argument("--no-stats", action="store_true", help="skip comparing meta/stats.json with the data")
    check.add_argument("--tolerance-s", type=float, default=1e-4, help="timestamp tolerance (LeRobot's default)")
    check.add_argument("--strict", action="store_true",
                       help="exit 1 on warnings too (statistics that are only approximate, as LeRobot writes them)")

    look = sub.add_parser("look", help="a contact sheet (PNG) of the stored frames: a few episodes of every task")
    look.add_argument("dataset", type=Path)
    look.add_argument("--out", type=Path, default=None, help="PNG to write (default: <dataset>.look.png beside it)")
    look.add_argument("--per-task", type=int, default=3, help="episodes of each task (the first ones)")
    look.add_argument("--frames", type=int, default=4, help="frames of each camera, spread over the episode")

    stats = sub.add_parser("stats", help="recompute statistics (with quantiles); several datasets are pooled")
    stats.add_argument("datasets", type=Path, nargs="+")
    stats.add_argument("--write", action="store_true", help="write them to meta/stats.json of every dataset")
    stats.add_argument("--out", type=Path, default=None, help="also write them to this JSON file")
    stats.add_argument("--no-images", action="store_true", help="skip camera statistics (no frame decoding)")

    convert = sub.add_parser("convert", help="LeRobot v3 <-> zarr replay buffer (Diffusion Policy / UMI layout)")
    convert.add_argument("source", type=Path, help="a LeRobot v3 dataset or a replay buffer (.zarr, .zarr.zip)")
    convert.add_argument("dest", type=Path, help="output path (must not exist)")
    convert.add_argument("--fps", type=int, default=None, help="frame rate, when the replay buffer has none")
    convert.add_argument("--task", default=None, help="instruction for every episode (replay buffer -> LeRobot)")
    convert.add_argument("--videos", action="store_true", help="store frames as video (lossy) instead of images")
    convert.add_argument("--map", action="append", default=[], metavar="KEY=FEATURE",
                         help="name the LeRobot feature of data/KEY (empty FEATURE drops it); repeatable")
    convert.add_argument("--skip-empty", action="store_true", help="drop empty episodes instead of failing")
    convert.add_argument("--repo-id", default=None)
    convert.add_argument("--robot-type", default=None)
    convert.add_argument("--zarr-format", type=int, default=2, choices=[2, 3],
                         help="replay buffer format (2 opens with the zarr 2.x that Diffusion Policy pins)")


def run(args: argparse.Namespace) -> int:
    """Execute `vla data <command>`; returns the exit code."""
    import av

    av.logging.set_libav_level(av.logging.FATAL)  # damaged videos are reported by us, once, with their location
    commands = {"cache": _cache, "check": _check, "look": _look, "stats": _stats, "convert": _convert}
    try:
        return commands[args.data_command](args)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug or an input we did not foresee: still one readable line
        if os.environ.get("VLA_DEBUG"):
            traceback.print_exc()
        print(f"error: unexpected {type(err).__name__}: {err} (set VLA_DEBUG=1 for the traceback)", file=sys.stderr)
        return 3


def _cache(args: argparse.Namespace) -> int:
    from vla.datasets.cache import cache_status, ensure_cache, parse_size, read_manifest

    size = parse_size(args.size)
    status = cache_status(args.dataset, size=size)
    if args.status:
        print(f"{status.state}: {status.reason}")
        return 0 if status.valid else 1
    path, before = ensure_cache(args.dataset, size, force=args.force, progress=sys.stderr.isatty())
    if before.valid and not args.force:
        print(f"up to date: {path}")
    else:
        print(f"built {path}" + ("" if before.state == "missing" else f" (was {before.state}: {before.reason})"))
    manifest = read_manifest(path) or {}
    for cam, info in manifest.get("cameras", {}).items():
        sizes = ", ".join(f"{m['name']} {m['bytes_per_frame'] / 1e3:.1f} kB {m['decode_us']:.0f} us"
                          for m in info.get("measurements", []))
        print(f"  {cam}: {info['shape'][0]}x{info['shape'][1]}, codec {info['codec']}"
              + (f" (measured per frame: {sizes})" if sizes else ""))
    disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(f"  {disk / 1e6:.1f} MB on disk; built in {manifest.get('build_seconds', 0):.1f} s")
    return 0


def _check(args: argparse.Namespace) -> int:
    from vla.datasets.check import check_dataset, exit_code, summary

    problems = check_dataset(args.dataset, frames=not args.no_frames, stats=not args.no_stats,
                             tolerance_s=args.tolerance_s, progress=sys.stderr.isatty())
    for problem in sorted(problems, key=lambda p: not p.is_error):  # errors first, each group in check order
        print(problem)
    if problems:
        print(f"{summary(problems)} in {args.dataset}")
    else:
        print(f"ok: {args.dataset} has no problems (0 errors, 0 warnings)")
    return exit_code(problems, strict=args.strict)


def _look(args: argparse.Namespace) -> int:
    from vla.datasets.look import look

    try:
        print(f"wrote {look(args.dataset, args.out, per_task=args.per_task, frames=args.frames)}")
    except ValueError as err:  # nothing to tile (no camera, cameras of different sizes) or a bad count
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _stats(args: argparse.Namespace) -> int:
    from vla.datasets.stats import compute_stats, format_stats, write_stats

    stats = compute_stats(args.datasets, images=not args.no_images, progress=sys.stderr.isatty())
    print(format_stats(stats))
    if args.no_images and args.write:
        from vla.datasets.stats import read_stats

        for root in args.datasets:  # keep each dataset's camera statistics
            old = read_stats(root / "meta" / "stats.json") if (root / "meta" / "stats.json").is_file() else {}
            write_stats({**old, **stats}, root / "meta" / "stats.json")
            print(f"wrote {root / 'meta' / 'stats.json'}")
    elif args.write:
        for root in args.datasets:
            write_stats(stats, root / "meta" / "stats.json")
            print(f"wrote {root / 'meta' / 'stats.json'}")
    if args.out:
        write_stats(stats, args.out)
        print(f"wrote {args.out}")
    return 0


def parse_map(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, feature = item.partition("=")
        if not sep or not key:
            raise DatasetError("--map", f"expects KEY=FEATURE, got {item!r}")
        out[key] = feature
    return out


def _convert(args: argparse.Namespace) -> int:
    from vla.datasets.replay_buffer import lerobot_to_zarr, zarr_to_lerobot

    if (args.source / "meta" / "info.json").is_file():
        out = lerobot_to_zarr(args.source, args.dest, zarr_format=args.zarr_format, progress=sys.stderr.isatty())
        print(f"wrote replay buffer {out}")
    else:
        out = zarr_to_lerobot(args.source, args.dest, fps=args.fps, task=args.task, repo_id=args.repo_id,
                              use_videos=args.videos, key_map=parse_map(args.map), skip_empty=args.skip_empty,
                              robot_type=args.robot_type, progress=sys.stderr.isatty())
        print(f"wrote LeRobot dataset {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m vla.datasets.cli data ...` (the same as `vla data ...`)."""
    parser = argparse.ArgumentParser(prog="vla")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
