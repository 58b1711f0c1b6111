"""Simulation figures: env steps/s with two 96x96 cameras, scripted-expert success per task, recording time.

    .venv/bin/python benchmarks/bench_sim.py [--seeds 100] [--record 100]

Expert success is measured on seeds 0..N-1 with cameras off (they do not affect the physics); steps/s with the
default cameras (SO-101: front + wrist at 96x96; Meta-World: corner + gripper at 96x96) while the expert acts.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import vla.envs  # noqa: F401
from vla.envs.metaworld import TASKS as MW_TASKS
from vla.envs.metaworld import MetaWorldEnv
from vla.envs.suite import make_env, make_expert
from vla.envs.tasks import TASKS as SO101_TASKS


def run_episodes(env, expert, seeds: range) -> tuple[int, int, float]:
    wins = steps = 0
    start = time.perf_counter()
    for seed in seeds:
        env.reset(seed=seed)
        expert.reset()
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(expert.act())
            steps += 1
            done = terminated or truncated
        wins += bool(info["is_success"])
    return wins, steps, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--speed-episodes", type=int, default=5)
    parser.add_argument("--record", type=int, default=100, help="episodes to record for the timing (0: skip)")
    args = parser.parse_args()

    rows = []
    names = [f"so101/{t}" for t in SO101_TASKS] + [f"metaworld/{t}" for t in MW_TASKS]
    for name in names:
        env = make_env(name)
        _, steps, seconds = run_episodes(env, make_expert(env), range(args.speed_episodes))
        env.close()
        fast = (
            make_env(name, cameras=()) if name.startswith("so101") else MetaWorldEnv(name.split("/")[1], cameras=())
        )
        wins, _, _ = run_episodes(fast, make_expert(fast), range(args.seeds))
        fast.close()
        rows.append((name, wins, steps / seconds))
        print(f"{name:28s} expert {wins}/{args.seeds}   {steps / seconds:6.0f} steps/s with cameras", flush=True)

    print(f"\n| env | expert success (seeds 0-{args.seeds - 1}) | env steps/s with cameras |")
    print("|---|---|---|")
    for name, wins, sps in rows:
        print(f"| {name} | {wins}/{args.seeds} | {sps:.0f} |")

    if args.record:
        from vla.envs.collect import record

        out = Path(tempfile.mkdtemp()) / "pick-color"
        summary = record("so101/pick-color", args.record, out, progress=False)
        print(
            f"\nrecorded {summary.saved} so101/pick-color episodes ({summary.frames} frames, video) in "
            f"{summary.seconds:.0f} s; expert {summary.successes}/{summary.attempted}"
        )
        shutil.rmtree(out.parent)


if __name__ == "__main__":
    main()
