"""`make demo`: generate a dataset, train the VLA with `lerobot-train`, reload the checkpoint, predict, report.

Everything is offline and CPU-sized: the synthetic "move to the red/blue square" dataset (vla.datasets.synthetic),
the `tiny` preset, a bounded number of steps. The report compares the policy's predicted chunks on held-out
episodes with the true actions and with a do-nothing baseline, and writes a loss plot.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

LOG_FREQ = 20


def train(data: Path, out: Path, steps: int, batch_size: int, preset: str, dtype: str, lr: float
          ) -> list[tuple[int, float]]:
    cmd = [str(Path(sys.executable).with_name("lerobot-train")), "--policy.type=vla", f"--policy.preset={preset}",
           "--policy.chunk_size=10", "--policy.n_action_steps=10", f"--policy.optimizer_lr={lr}",
           f"--policy.dtype={dtype}",
           "--policy.scheduler_warmup_steps=50", f"--policy.scheduler_decay_steps={steps}",
           "--policy.push_to_hub=false", "--policy.device=cpu", "--dataset.repo_id=local/vla-synthetic",
           f"--dataset.root={data}", f"--output_dir={out}", f"--steps={steps}", f"--batch_size={batch_size}",
           f"--save_freq={steps}", f"--log_freq={LOG_FREQ}", "--num_workers=1", "--wandb.enable=false", "--eval_freq=0"]
    print("$", " ".join(cmd), flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    losses: list[tuple[int, float]] = []
    log = (out.parent / "train.log").open("w")
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            match = re.search(r" step:\S+ .*loss:([\d.]+)", line)
            if match:  # logged every log_freq steps (LeRobot rounds the printed step, so count ourselves)
                step = (len(losses) + 1) * LOG_FREQ
                losses.append((step, float(match.group(1))))
                print(f"  step {step:5d}/{steps}  loss {losses[-1][1]:.4f}", flush=True)
        if proc.wait() != 0:
            raise SystemExit(f"lerobot-train failed; its output is in {log.name}")
    return losses


def plot(losses: list[tuple[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*losses, strict=True))
    ax.set(xlabel="step", ylabel="flow-matching loss", yscale="log", title="VLA training loss (lerobot-train)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate(ckpt: Path, episodes: int, image_size: int) -> tuple[float, float]:
    """Mean absolute error of predicted chunks on new episodes, and of holding the current position."""
    from lerobot.policies.factory import make_pre_post_processors

    import lerobot_policy_vla  # noqa: F401
    from vla.datasets.synthetic import CAMERA, episode
    from vla.policies.modeling_vla import VLAPolicy

    policy = VLAPolicy.from_pretrained(ckpt)
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(ckpt))
    rng = np.random.default_rng(10_000)  # seeds disjoint from the training data
    horizon = policy.config.chunk_size
    errors, baseline = [], []
    for _ in range(episodes):
        task, frames = episode(rng, 30, image_size)
        for start in (0, 10):
            f = frames[start]
            obs = {CAMERA: torch.from_numpy(f[CAMERA]).permute(2, 0, 1).float() / 255,
                   "observation.state": torch.from_numpy(f["observation.state"]), "task": task}
            chunk = post(policy.predict_action_chunk(pre(obs)))[0].numpy()
            truth = np.stack([frames[start + i]["action"] for i in range(horizon)])
            errors.append(np.abs(chunk - truth).mean())
            baseline.append(np.abs(f["observation.state"] - truth).mean())
    return float(np.mean(errors)), float(np.mean(baseline))


def run(out: Path, steps: int, episodes: int, batch_size: int, preset: str, dtype: str, lr: float) -> None:
    from vla.datasets.synthetic import make_dataset

    t0 = time.time()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    print(f"[1/4] generating {episodes} episodes of 'move to the red/blue square' (LeRobot v3, video)", flush=True)
    data = make_dataset(out / "data", episodes=episodes, length=20, image_size=32, seed=0)
    print(f"[2/4] training the '{preset}' VLA for {steps} steps with lerobot-train", flush=True)
    losses = train(data, out / "train", steps, batch_size, preset, dtype, lr)
    plot(losses, out / "loss.png")
    ckpt = out / "train" / "checkpoints" / "last" / "pretrained_model"
    print(f"[3/4] reloading {ckpt} and predicting chunks on 10 held-out episodes", flush=True)
    err, base = evaluate(ckpt, 10, 32)
    print("[4/4] done", flush=True)
    print(f"\n  loss: {losses[0][1]:.3f} (step {losses[0][0]}) -> {losses[-1][1]:.3f} (step {losses[-1][0]})")
    print(f"  held-out chunk error (mean |action - truth|): {err:.4f}   hold-still baseline: {base:.4f}")
    print(f"  checkpoint: {ckpt}\n  loss plot:  {out / 'loss.png'}\n  total time: {time.time() - t0:.0f} s")
