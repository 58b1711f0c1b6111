"""`make bench-learn`: which policy learns an SO-101 task best from the same demonstrations in the same CPU time.

For each task: the scripted expert records `--episodes` demonstrations once (LeRobot v3, two 96x96 cameras, seeds
from 0; `--action-noise` records them with DART recoveries, as the place and stack recipes do) and their frame
cache is built. Then every policy trains on them with `vla train` (LeRobot's training loop; every policy reads the
same frame cache, so data loading costs all of them alike) for the same wall-clock budget: a 30-step probe
measures each policy's seconds per step on this machine, and the run gets as many steps as fit in `--budget-min`.
Checkpoints at 1/4, 1/2, 3/4 and all of the budget are rolled out by one harness (`vla.envs.rollout`, any LeRobot
checkpoint) on seeds from 1,000,000, disjoint from the recording seeds: the final ones for `--rollouts` episodes,
the earlier ones for `--curve-rollouts`, for the success-against-minutes plot. results.json and the plot are saved
after each policy; `--resume` keeps the policies a stopped run finished.

`metaworld/mt6` is the six Meta-World tasks of the issue's target (reach, push, pick-place, button-press-topdown,
drawer-open, door-open) as one task: 50 demonstrations each by default, recorded as the recipe of
docs/learning.md records them (exact frames, DART on the hand 0.1, the hand's start spread 10), one multi-task
policy per row trained on all of them, and `--rollouts` split evenly among the six envs.

Policies and their settings (as a user would set them for a CPU, from scratch: nothing can be downloaded here):
  vla        --policy.preset=cpu (conv tokenizer with FiLM, word vocabulary, shift augmentation, 5 Euler steps),
             chunk 16, 8 actions executed per chunk, eight noise draws per observation, lr 1e-3, 100 warm-up
             steps, a cosine decay planned three runs long and not shrunk to the run (the recipe of
             docs/learning.md), weights' moving average 0.999, batch 32; acting on the mean of eight sampled
             chunks per inference, as `make demo` does (before 2026-12-07's eighteenth session: one chunk)
  act        LeRobot ACT defaults except: chunk 16 and 8 actions executed (its default 100 spans two whole
             pick episodes), no pretrained ResNet-18 weights (offline), batch 32
  diffusion  LeRobot Diffusion Policy defaults (2 observation steps, U-Net, ResNet-18) except: the Diffusion
             Policy paper's horizon 16 with 8 actions executed and 84 px random crop of the 96 px frames (0.6.1's
             defaults are horizon 64, 32 actions, no crop), no pretrained ResNet-18 weights, 10 DDIM inference
             steps instead of 100 DDPM ones (a CPU user's setting), batch 32
  smolvla    LeRobot SmolVLA from random weights (its VLM, SmolVLM2, cannot be downloaded): a SmolVLM config of
             the `cpu` preset's text size (4 layers of 128, 4 heads) with a SigLIP tower of 2 layers of 128 on
             96 px frames (36 tokens an image, as many as ours), saved offline with a word-level tokenizer of the
             dataset's instruction words (`benchmarks/smolvla_reference.py`); SmolVLA's defaults except: the
             vision tower and the VLM trained too (its defaults freeze both, which only makes sense with
             pretrained weights), frames padded to 96 px instead of 512, chunk 16 and 8 actions executed, batch 32
  act-lr1e-4, smolvla-lr1e-3   the same at a learning rate for training from scratch (ACT's default 1e-5 and
             SmolVLA's 1e-4 are fine-tuning rates); run only when named in --policies

    python benchmarks/bench_learn.py [--tasks so101/pick-color] [--policies vla act diffusion smolvla] [--budget-min 10]
                                     [--episodes 200] [--action-noise 0] [--rollouts 100] [--curve-rollouts 25]
                                     [--out outputs/bench_learn] [--resume]
    python benchmarks/bench_learn.py --tasks metaworld/mt6 --rollouts 150 ...   # 25 episodes an env

Needs diffusers for Diffusion Policy: `pip install -e ".[bench]"` (`make bench-learn` does it). Runs of this length
must run alone on the machine. Prints a table and writes results.json and success.png.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_model import cpu_bf16_support  # beside this script, whose folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
POLICIES: dict[str, list[str]] = {
    "vla": ["--policy.type=vla", "--policy.preset=cpu", "--policy.n_action_steps=8", "--policy.flow_samples=8",
            "--policy.optimizer_lr=1e-3", "--policy.scheduler_warmup_steps=100",
            "--policy.scheduler_scale_to_run=false", "--policy.ema_decay=0.999", "--policy.action_samples=8"],
    "act": ["--policy.type=act", "--policy.chunk_size=16", "--policy.n_action_steps=8",
            "--policy.pretrained_backbone_weights=null"],
    "diffusion": ["--policy.type=diffusion", "--policy.horizon=16", "--policy.n_action_steps=8",
                  "--policy.crop_shape=[84,84]", "--policy.pretrained_backbone_weights=null",
                  "--policy.noise_scheduler_type=DDIM", "--policy.num_inference_steps=10"],
    # and --policy.vlm_model_name: the offline VLM made for the task (policy_flags)
    "smolvla": ["--policy.type=smolvla", "--policy.load_vlm_weights=false", "--policy.freeze_vision_encoder=false",
                "--policy.train_expert_only=false", "--policy.num_vlm_layers=4", "--policy.chunk_size=16",
                "--policy.n_action_steps=8", "--policy.resize_imgs_with_padding=[96,96]"],
}
# The peers at a learning rate for training from scratch (not run unless named in --policies): ACT's default 1e-5
# (its backbone's too) and SmolVLA's 1e-4 are fine-tuning rates for pretrained weights.
VARIANTS: dict[str, list[str]] = {
    "act-lr1e-4": [*POLICIES["act"], "--policy.optimizer_lr=1e-4", "--policy.optimizer_lr_backbone=1e-4"],
    "smolvla-lr1e-3": [*POLICIES["smolvla"], "--policy.optimizer_lr=1e-3"],
}
# Tasks that are several envs recorded into one dataset and learned by one policy: their envs, demonstrations per
# env, and how they are recorded (`vla.envs.collect.record`'s arguments); any other task is one env of that name.
SUITES: dict[str, dict[str, Any]] = {
    "metaworld/mt6": {"envs": [f"metaworld/{t}" for t in ("reach", "push", "pick-place", "button-press-topdown",
                                                          "drawer-open", "door-open")],
                      "episodes": 50, "record": {"use_videos": False, "action_noise": 0.1, "start_noise": 10.0}},
}
SO101_EPISODES = 200
QUARTERS = (0.25, 0.5, 0.75, 1.0)
UPDATE = re.compile(r"updt_s:([\d.]+) data_s:([\d.]+)")


def vla_train(args: list[str], log: Path) -> None:
    cmd = [str(Path(sys.executable).with_name("vla")), "train", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with log.open("w") as out:
        if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode:
            raise SystemExit(f"training failed: {' '.join(cmd)}\n  its output: {log}")


def common(data: Path, repo_id: str, out: Path, steps: int, save_freq: int) -> list[str]:
    return [f"--dataset.repo_id={repo_id}", f"--dataset.root={data}", f"--output_dir={out}", f"--steps={steps}",
            f"--save_freq={save_freq}", "--log_freq=10", "--batch_size=32", "--num_workers=1",
            "--wandb.enable=false", "--env_eval_freq=0", "--policy.push_to_hub=false", "--policy.device=cpu"]


def smolvla_vlm(data: Path, work: Path) -> Path:
    """The offline SmolVLM that SmolVLA trains from (see the module docstring), its words those of `data`'s
    instructions; made once per task."""
    import pandas as pd
    from smolvla_reference import save_local_vlm  # beside this script, which puts its folder on sys.path

    from vla.model.config import PRESETS, VisionConfig

    shape = PRESETS["cpu"].replace(vision=VisionConfig(hidden_size=128, num_layers=2, num_heads=2,
                                                       intermediate_size=512, image_size=96, patch_size=16))
    tasks = pd.read_parquet(data / "meta" / "tasks.parquet").index
    words = {w for task in tasks for w in re.findall(r"\w+|[^\w\s]+", str(task))}
    return save_local_vlm(shape, work / "smolvla-vlm", words)


def policy_flags(policy: str, data: Path, work: Path) -> list[str]:
    """`policy`'s settings as `vla train` flags (SmolVLA's include the offline VLM made for this task)."""
    flags = {**POLICIES, **VARIANTS}[policy]
    if policy.split("-")[0] == "smolvla":
        return [*flags, f"--policy.vlm_model_name={smolvla_vlm(data, work)}"]
    return flags


def seconds_per_step(policy: str, flags: list[str], data: Path, repo_id: str, work: Path) -> float:
    """Mean seconds per training step (update + data) over steps 11-30 of a probe run with `flags`."""
    out = work / f"probe-{policy}"
    shutil.rmtree(out, ignore_errors=True)
    log = work / f"probe-{policy}.log"
    vla_train([*flags, *common(data, repo_id, out, 30, 10_000)], log)
    times = [float(u) + float(d) for u, d in UPDATE.findall(log.read_text())]
    if len(times) < 2:
        raise SystemExit(f"no step timings in {log}")
    return sum(times[1:]) / len(times[1:])


def schedule_flags(policy: str, steps: int) -> list[str]:
    return [f"--policy.scheduler_decay_steps={3 * steps}"] if policy == "vla" else []


def run_task(task: str, policies: list[str], args: argparse.Namespace, done: list[dict[str, Any]]) -> None:
    """Train and roll out each policy on `task`, appending its row to `done` and saving results.json and the plot
    after each one (a stopped run keeps the policies it finished; `--resume` skips them)."""
    work = args.out / task.replace("/", "_")
    data, repo_id = work / "data", f"local/{task.replace('/', '_')}"
    envs = demonstrations(task, args, work, data, repo_id)
    for policy in policies:
        if any(r["task"] == task and r["policy"] == policy for r in done):
            print(f"[{task}] {policy}: in {args.out / 'results.json'} already", flush=True)
            continue
        settings = policy_flags(policy, data, work)
        per_step = seconds_per_step(policy, settings, data, repo_id, work)
        steps = max(40, int(args.budget_min * 60 / per_step))
        save_freq = max(1, steps // len(QUARTERS))
        print(f"[{task}] {policy}: {per_step:.3f} s/step -> {steps} steps in {args.budget_min} min", flush=True)
        out = work / policy
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        flags = [*settings, *schedule_flags(policy, steps)]
        vla_train([*flags, *common(data, repo_id, out, steps, save_freq)], work / f"train-{policy}.log")
        minutes = (time.perf_counter() - started) / 60
        curve = []
        for i, fraction in enumerate(QUARTERS, start=1):
            step = steps if fraction == 1.0 else save_freq * i
            ckpt = out / "checkpoints" / f"{step:06d}" / "pretrained_model"
            if not ckpt.is_dir():
                continue
            episodes = args.rollouts if fraction == 1.0 else args.curve_rollouts
            if not episodes:
                continue
            result = evaluate(ckpt, envs, episodes, work / f"rollout-{policy}-{step}", final=fraction == 1.0)
            curve.append({"step": step, "minutes": minutes * fraction, **result})
            print(f"    step {step}: {result['successes']}/{result['episodes']}", flush=True)
        done.append({"task": task, "policy": policy, "cpu": cpu_bf16_support(), "settings": flags, "steps": steps,
                     "seconds_per_step": per_step, "train_minutes": minutes, "curve": curve})
        (args.out / "results.json").write_text(json.dumps(done, indent=2))
        plot(done, args.out / "success.png")


def demonstrations(task: str, args: argparse.Namespace, work: Path, data: Path, repo_id: str) -> list[str]:
    """Record `task`'s demonstrations into `data` and cache their frames, once; return the envs the task plays.
    A work folder recorded with other settings is refused rather than reused."""
    from vla.datasets.cache import build_cache
    from vla.envs.collect import record

    suite = SUITES.get(task, {"envs": [task], "episodes": SO101_EPISODES, "record": {}})
    settings = {"episodes": args.episodes or suite["episodes"], **suite["record"]}
    if args.action_noise is not None:
        settings["action_noise"] = args.action_noise
    if not settings.get("action_noise", 1):
        del settings["action_noise"]  # 0 is record's default: as if not given
    stamp = work / "recording.json"
    if (data / "meta" / "info.json").is_file():
        before = json.loads(stamp.read_text()) if stamp.is_file() else {"episodes": SO101_EPISODES}
        if before != settings:
            raise SystemExit(f"{data} was recorded with {before}, not {settings}: use another --out, or the same "
                             "--episodes and --action-noise")
        return suite["envs"]
    shutil.rmtree(data, ignore_errors=True)  # a recording stopped before it finished (no info.json yet)
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(settings))
    episodes = settings.pop("episodes")
    print(f"[{task}] recording {episodes} expert demonstrations" + (" an env" if len(suite["envs"]) > 1 else "")
          + (f", {settings}" if settings else ""), flush=True)
    names = suite["envs"] if len(suite["envs"]) > 1 else task
    record(names, episodes, data, repo_id=repo_id, workers=max(1, min(4, len(os.sched_getaffinity(0)))),
           **settings)  # fmt: skip
    build_cache(data, progress=False)
    return suite["envs"]


def evaluate(ckpt: Path, envs: list[str], episodes: int, out: Path, final: bool) -> dict[str, Any]:
    """Roll the checkpoint out on seeds from 1,000,000 in one process a core: `episodes` on one env, or split
    evenly among a suite's envs (rounded up), its success pooled and each env's kept."""
    from vla.envs.rollout import rollout, rollout_tasks, summarize
    from vla.runtime.checkpoint import CheckpointActor

    loader = functools.partial(CheckpointActor, ckpt)
    kwargs = {"n_envs": 4, "videos": (2 if len(envs) == 1 else 1) if final else 0,
              "workers": len(os.sched_getaffinity(0))}
    if len(envs) == 1:
        r = rollout(loader, envs[0], episodes=episodes, out=out, **kwargs)
        return {"episodes": r.episodes, "successes": r.successes, "ci95": r.ci95, "wrong_object": r.wrong_object,
                "per_target": r.per_target}
    pooled = summarize(rollout_tasks(loader, envs, episodes=-(-episodes // len(envs)), out=out, **kwargs))
    return {**pooled, "wrong_object": None}


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for r in (r for r in rows if r["task"] == task):
            xs = [c["minutes"] for c in r["curve"]]
            ys = [c["successes"] / c["episodes"] for c in r["curve"]]
            ax.plot(xs, ys, marker="o", label=r["policy"])
        ax.set(title=task, xlabel="training minutes (2 CPU cores)", ylabel="success rate", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| task | policy | steps | train min | success (final) | 95% CI | wrong object |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        final = r["curve"][-1]
        low, high = final["ci95"]
        lines.append(f"| {r['task']} | {r['policy']} | {r['steps']} | {r['train_minutes']:.1f} | "
                     f"{final['successes']}/{final['episodes']} | {low:.0%}-{high:.0%} | {final['wrong_object']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["so101/pick-color"],
                        help="so101/<task> envs, or " + ", ".join(SUITES) + " (several envs, one policy)")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=[*POLICIES, *VARIANTS],
                        help="policies to train; also " + ", ".join(VARIANTS) + " (the peers at a from-scratch rate)")
    parser.add_argument("--budget-min", type=float, default=10.0, help="training wall-clock minutes per policy")
    parser.add_argument("--episodes", type=int, default=None,
                        help=f"demonstrations recorded per task (default {SO101_EPISODES}; a suite's: 50 an env)")
    parser.add_argument("--action-noise", type=float, default=None,
                        help="record with DART recoveries of this size (`vla record --action-noise`; default: none "
                             "for an SO-101 task, 0.1 for metaworld/mt6)")
    parser.add_argument("--rollouts", type=int, default=100, help="evaluation episodes of each final checkpoint")
    parser.add_argument("--curve-rollouts", type=int, default=25,
                        help="evaluation episodes of each earlier checkpoint (0: final checkpoints only)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_learn")
    parser.add_argument("--resume", action="store_true", help="keep the rows of OUT/results.json, run the rest")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_bf16_support()}, {os.cpu_count()} cores; budget {args.budget_min} min "
          f"per policy, {args.rollouts} evaluation episodes", flush=True)
    results = args.out / "results.json"
    rows: list[dict[str, Any]] = json.loads(results.read_text()) if args.resume and results.is_file() else []
    for task in args.tasks:
        run_task(task, args.policies, args, rows)
    print("\n" + table(rows))
    print(f"\nresults: {args.out / 'results.json'}\nplot:    {args.out / 'success.png'}")


if __name__ == "__main__":
    main()
