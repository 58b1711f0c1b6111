"""The `vla` command. Every subcommand is a thin call into the packages."""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vla", description="VLA control stack")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="generate data, train with lerobot-train, reload, predict (offline, CPU)")
    demo.add_argument("--out", type=Path, default=Path("outputs/demo"))
    demo.add_argument("--steps", type=int, default=800)
    demo.add_argument("--episodes", type=int, default=60)
    demo.add_argument("--batch-size", type=int, default=32)
    demo.add_argument("--preset", default="tiny", choices=["tiny", "small"])
    demo.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    demo.add_argument("--lr", type=float, default=1e-3)

    args = parser.parse_args(argv)
    if args.command == "demo":
        from vla.demo import run

        run(args.out, args.steps, args.episodes, args.batch_size, args.preset, args.dtype, args.lr)


if __name__ == "__main__":
    main()
