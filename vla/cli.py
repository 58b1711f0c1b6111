"""The `vla` command. Every subcommand is a thin call into the packages."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path
from typing import Any, Literal

from vla.cli_args import POSITIVE, POSITIVE_INT, checkpoint_dir, names_list, number, size_wxh
from vla.datasets import cli as data_cli
from vla.hardware import cli as hardware_cli
from vla.runtime import cli as runtime_cli
from vla.runtime import deploy as deploy_cli

COMMAND_MODULES = (data_cli, hardware_cli, runtime_cli, deploy_cli)  # each: COMMANDS, add_parsers(sub), run(args)


def parse_size(text: str) -> tuple[int, int]:
    try:
        return size_wxh(text)
    except ValueError as err:
        raise SystemExit(f"--image-size {err}") from None


def main(argv: list[str] | None = None) -> None:
    """`vla ...`: any failure ends in one line naming what went wrong (`VLA_DEBUG=1` shows the traceback)."""
    try:
        dispatch(sys.argv[1:] if argv is None else argv)
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as err:
        if os.environ.get("VLA_DEBUG") == "1":
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise SystemExit(f"error: {type(err).__name__}: {message[:500]} (VLA_DEBUG=1 shows the traceback)") from None


def dispatch(argv: list[str]) -> None:
    if argv[:1] == ["train"]:  # every lerobot-train flag, parsed by LeRobot (vla/train.py)
        from vla.train import run as train

        train(argv[1:])
        return
    parser = build_parser()
    args = parser.parse_args(argv)
    for module in COMMAND_MODULES:
        if args.command in module.COMMANDS:
            code = module.run(args)
            if code:
                raise SystemExit(code)
    if args.command == "record":
        run_record(args)
    if args.command == "rollout":
        run_rollout(args, parser)
    if args.command == "demo":
        if args.synthetic and args.images:
            parser.error("--images: records the sim's demonstrations; the --synthetic task writes its own dataset")
        run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    """`vla`'s parser: the simulation commands here, the others from each package's `cli` module."""
    parser = argparse.ArgumentParser(prog="vla", description="VLA control stack")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="lerobot-train through the frame cache: takes every lerobot-train flag",
                   add_help=False)

    demo = sub.add_parser("demo", help="record in sim, train with lerobot-train, roll out (offline, CPU)")
    demo.add_argument("--out", type=Path, default=Path("outputs/demo"))
    demo.add_argument("--env", default="so101/pick-color", help="sim task to record, train on and roll out")
    demo.add_argument("--steps", type=POSITIVE_INT, default=None,
                      help="training steps (default 1600 sim, 800 synthetic)")  # fmt: skip
    demo.add_argument("--episodes", type=POSITIVE_INT, default=None,
                      help="demonstrations to record (default 200 sim, 100 synthetic)")  # fmt: skip
    demo.add_argument("--rollouts", type=POSITIVE_INT, default=100, help="evaluation episodes on unseen seeds")
    demo.add_argument("--batch-size", type=POSITIVE_INT, default=32)
    demo.add_argument("--preset", default=None, choices=["tiny", "cpu", "small"],
                      help="network sizes (default cpu in sim, tiny synthetic)")  # fmt: skip
    demo.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    demo.add_argument("--lr", type=POSITIVE, default=None, help="peak learning rate (default 1e-3)")
    demo.add_argument("--synthetic", action="store_true", help="the 2-D synthetic task instead of the sim")
    demo.add_argument("--images", action="store_true",
                      help="record exact PNG frames instead of video (what the rollouts show the policy; ~15x larger)")

    rec = sub.add_parser("record", help="record scripted-expert demonstrations in sim to a LeRobot v3 dataset")
    rec.add_argument(
        "--env", required=True, help="so101/<task> (reach, pick, pick-color, place, stack), metaworld/<task>; several, "
        "comma-separated, record one multi-task dataset (their features must agree)"
    )
    rec.add_argument("--episodes", type=int, default=100, help="successful episodes to save (of each env)")
    rec.add_argument("--out", type=Path, required=True, help="dataset directory")
    rec.add_argument("--resume", action="store_true",
                     help="append --episodes more of each env to an existing dataset, with fresh seeds")
    rec.add_argument("--top-up", action="store_true",
                     help="with --resume: record until each env holds --episodes, counting the episodes already "
                          "saved (evens out a stopped multi-task recording)")
    rec.add_argument("--image-size", default="96x96", help="WxH of each camera")
    rec.add_argument("--cameras", type=names_list, default=None, metavar="A,B",
                     help="the cameras to record, by name (so101: front, wrist, close: the front view framed on the "
                          "workspace; metaworld: corner, gripper); default: the env's own (so101 front,wrist)")
    frames = rec.add_mutually_exclusive_group()
    frames.add_argument("--images", action="store_true",
                        help="store each frame exactly, as a PNG image: what a rollout shows the policy, ~20x larger")
    frames.add_argument("--video", action="store_true",
                        help="store H.264 video (the default): its colour at half resolution and compression blur "
                             "small objects (at 96 px it erased Meta-World's goal marker)")
    rec.add_argument("--keep-failed", action="store_true", help="also save episodes where the expert failed")
    rec.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    rec.add_argument("--workers", type=POSITIVE_INT, default=1,
                     help="processes recording at once, e.g. the number of cores (a new dataset: not with --resume); "
                          "their shards are joined into --out at the end, or when stopped")  # fmt: skip
    rec.add_argument("--repo-id", default=None)
    rec.add_argument("--commit-every", type=number(float, low=0), default=30.0, metavar="SECONDS",
                     help="make the dataset loadable this often; a SIGKILL loses what was saved since (0: after "
                          "every episode, slower as the dataset grows)")  # fmt: skip
    rec.add_argument("--action-noise", type=number(float, low=0), default=0.0, metavar="STD",
                     help="perturb the executed actions by slowly drifting noise of this standard deviation, "
                          "recording the expert's own actions, so the demonstrations show recoveries (DART); in the "
                          "env's action units: so101 joint degrees (e.g. 2), metaworld hand units, 1 = 1 cm a step "
                          "(e.g. 0.1)")  # fmt: skip
    rec.add_argument("--start-noise", type=number(float, low=0), default=None, metavar="SPREAD",
                     help="how far the arm's start may lie from the env's start pose: so101 joint degrees (default "
                          "4), metaworld cm on each hand axis (default 0: one start, whose path gives the goal away; "
                          "e.g. 5). Rollouts keep the default")  # fmt: skip

    ro = sub.add_parser("rollout", help="evaluate a checkpoint (or --policy expert) in sim")
    ro.add_argument("--policy", required=True, help="checkpoint directory (pretrained_model) or 'expert'")
    ro.add_argument("--env", required=True, help="an env, or several comma-separated (a multi-task policy): each "
                    "is played for --episodes, and their mean success is reported")  # fmt: skip
    ro.add_argument("--episodes", type=POSITIVE_INT, default=50)
    ro.add_argument("--n-envs", type=POSITIVE_INT, default=4, help="envs stepped together, the policy's batch (in "
                    "each worker)")  # fmt: skip
    ro.add_argument("--workers", type=POSITIVE_INT, default=1,
                    help="processes playing shares of the episodes at once, each loading the policy (on a CPU, one "
                         "a core: software rendering, half a rollout's time, uses one core a process)")  # fmt: skip
    ro.add_argument("--out", type=Path, default=Path("outputs/rollout"))
    ro.add_argument("--videos", type=number(int, low=0), default=4, help="episodes to save as mp4")
    ro.add_argument("--seed", type=int, default=None, help="first seed (default: the evaluation range)")
    ro.add_argument("--device", default="cpu")
    ro.add_argument("--action-samples", type=POSITIVE_INT, default=None, metavar="K",
                    help="our VLA: sample K chunks per inference and act on their mean (default: the checkpoint's "
                         "action_samples, 1 unless trained otherwise); K times the denoising work")  # fmt: skip
    ro.add_argument("--probe-targets", default="", metavar="A,B,...",
                    help="language probe: play each scene once per named object (e.g. red,green,blue for "
                         "so101/pick-color), so the same layout is asked for each in turn")  # fmt: skip

    for module in COMMAND_MODULES:
        module.add_parsers(sub)
    return parser


def run_record(args: argparse.Namespace) -> None:
    from vla.envs.collect import record

    if args.top_up and not args.resume:
        raise SystemExit("--top-up counts the episodes already in --out: add --resume")
    try:
        summary = record(
            args.env, args.episodes, args.out, resume=args.resume, image_size=parse_size(args.image_size),
            cameras=args.cameras,
            use_videos=not args.images, keep_failed=args.keep_failed, seed=args.seed, repo_id=args.repo_id,
            commit_every=args.commit_every, action_noise=args.action_noise, start_noise=args.start_noise,
            top_up=args.top_up, workers=args.workers,
        )  # fmt: skip
    except KeyboardInterrupt:
        how = "the same command with --resume" if args.workers == 1 else "it again with --resume and --workers 1"
        print(f"\ninterrupted: the episodes saved so far are kept in {args.out}; run {how} to add more (--resume "
              "--top-up to fill each env up to --episodes)", file=sys.stderr)
        raise SystemExit(130) from None
    if summary.rolled_back:
        print(f"{summary.rolled_back} episodes saved after the last commit of the killed recording were dropped")
    print(
        f"saved {summary.saved} episodes ({summary.frames} frames) to {summary.root} in {summary.seconds:.0f} s; "
        f"expert succeeded in {summary.successes}/{summary.attempted} attempts"
    )
    for env, count in summary.per_env.items():
        print(f"  {env}: {count['saved']} saved, expert {count['successes']}/{count['attempted']}")
    if summary.saved:
        from vla.datasets.errors import DatasetError
        from vla.datasets.look import look

        try:
            sheet = look(summary.root)
        except (DatasetError, ValueError, OSError) as err:  # the recording is saved either way
            print(f"no contact sheet of the stored frames: {err}", file=sys.stderr)
        else:
            print(f"the stored frames, a few episodes of each task (look before training): {sheet}")


def run_rollout(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from vla.envs import rollout as sim
    from vla.envs.collect import env_names

    player: sim.Actor | sim.ActorLoader | Literal["expert"] = "expert"
    if args.policy != "expert":
        try:
            checkpoint_dir(args.policy)
        except argparse.ArgumentTypeError as err:
            parser.error(f"argument --policy: {err}")
        from vla.runtime.checkpoint import CheckpointActor

        load = functools.partial(CheckpointActor, args.policy, args.device, action_samples=args.action_samples)
        player = load() if args.workers == 1 else load  # several workers: each loads its own
    try:
        names = env_names(args.env)
    except ValueError as err:
        parser.error(f"argument --env: {err}")
    kwargs: dict[str, Any] = {"seed": sim.EVAL_SEED if args.seed is None else args.seed, "videos": args.videos,
                              "targets": tuple(t for t in args.probe_targets.split(",") if t),
                              "workers": args.workers}  # fmt: skip
    if len(names) > 1:
        results = sim.rollout_tasks(player, names, args.episodes, args.n_envs, args.out, **kwargs)
        outs = [sim.task_out(args.out, name) for name in names]
    else:
        results, outs = [sim.rollout(player, names[0], args.episodes, args.n_envs, args.out, **kwargs)], [args.out]
    for result, out in zip(results, outs, strict=True):
        print(sim.format_result(result))
        print(f"  results: {out / 'results.json'}")
        for path in result.videos:
            print(f"  video:   {path}")
    if len(results) > 1:
        print(sim.format_summary(results))
        print(f"  summary: {args.out / 'summary.json'}")


def run_demo(args: argparse.Namespace) -> None:
    from vla.demo import run, run_sim

    if args.synthetic:
        run(args.out, args.steps or 800, args.episodes or 100, args.batch_size, args.preset or "tiny", args.dtype,
            args.lr or 1e-3)
    else:
        run_sim(args.out, args.env, args.steps or 1600, args.episodes or 200, args.batch_size, args.preset or "cpu",
                args.dtype, args.lr or 1e-3, args.rollouts, images=args.images)


if __name__ == "__main__":
    main()
