"""Can the `cpu` preset's image tokenizer read a Meta-World goal from the frames? A supervised probe.

    .venv/bin/python benchmarks/probe_goal.py [--task reach] [--train 50] [--target goal] [--shift 4]
    .venv/bin/python benchmarks/probe_goal.py --policy outputs/mw/checkpoints/008000/pretrained_model --steps 2000

Renders the first frame of `--train` scenes (seeds 0..N-1) and of 200 unseen ones (seeds from 1,000,000), both
cameras at 96 px, and trains the preset's convolutional tokenizer with a small head to regress the goal's (or the
object's) position from the pixels alone: at the first frame the hand always starts in the same place, so only
the pixels say where the goal is. It prints the error on the unseen scenes against always guessing the training
mean, and the share within 5 cm (reach's success radius). A policy cannot use what this probe cannot read; if the
probe reads it and the policy does not, look at the policy's training, not its eyes.

`--policy CKPT` asks what a trained policy's own image tokens carry instead: the checkpoint's tokenizer (with its
instruction's FiLM) is frozen, and only the head is trained, on the same scenes.

Measured with it (docs/learning.md): before `MetaWorldEnv.reset` refreshed MuJoCo's derived positions, the first
frame drew the goal marker at another draw's position, and the probe learned nothing about the goal (error equal to
the mean guess, with 50 or 400 training scenes) while it read the puck to 4 mm.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from vla.envs.metaworld import MetaWorldEnv
from vla.model.config import PRESETS
from vla.model.conv_vision import ConvVision, TokenProjector, random_shift

TEST_SEED = 1_000_000
Scenes = tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...], str]


def render_scenes(task: str, seeds: range, size: int) -> Scenes:
    """First frames (N, cameras, S, S, 3) uint8, goal positions (N, 3) and object positions (N, 3) in metres, the
    camera names and the task's instruction."""
    env = MetaWorldEnv(task, image_size=(size, size))
    frames, goals, objects = [], [], []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        frames.append(np.stack([obs["pixels"][c] for c in env.cameras]))
        goals.append(env.raw_obs[36:39].copy())
        objects.append(env.raw_obs[4:7].copy())
    env.close()
    return np.stack(frames), np.stack(goals), np.stack(objects), env.cameras, env.task_description


def to_pixels(frames: np.ndarray) -> torch.Tensor:
    """(N, cameras, S, S, 3) uint8 -> (N, cameras, 3, S, S) in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 1, 4, 2, 3).float() / 127.5 - 1


@torch.no_grad()
def policy_tokens(runner: Any, frames: np.ndarray, cameras: tuple[str, ...], instruction: str) -> torch.Tensor:
    """A loaded checkpoint's (`InferencePolicy`) image tokens for each scene, flattened (N, cameras * tokens *
    width), computed as the policy computes them: its preprocessor, its tokenizer conditioned on the instruction."""
    policy, model = runner.policy, runner.policy.model
    state = torch.zeros(int(policy.config.robot_state_feature.shape[0]))
    rows = []
    for scene in frames:
        batch: dict = {"task": instruction, "observation.state": state}
        for name, image in zip(cameras, scene, strict=True):
            batch[f"observation.images.{name}"] = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        obs = policy.observation(runner.pre(batch))
        context, _, _ = model.embed_prefix(obs)  # image tokens first, then the instruction's
        rows.append(context[0, : len(cameras) * model.cfg.tokens_per_image].flatten())
    return torch.stack(rows).float()


class Probe(nn.Module):
    """The preset's tokenizer on each camera, its tokens flattened in grid order, an MLP to three numbers."""

    def __init__(self, cameras: int, size: int) -> None:
        super().__init__()
        preset = PRESETS["cpu"]
        vision = dataclasses.replace(preset.vision, image_size=size)
        tokens = (size // vision.patch_size) ** 2
        width = preset.text.hidden_size
        self.vision = ConvVision(vision, width)
        self.project = TokenProjector(vision.hidden_size, width, tokens)
        self.head = nn.Sequential(nn.Linear(cameras * tokens * width, 256), nn.GELU(), nn.Linear(256, 3))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (N, cameras, 3, S, S) -> (N, 3)
        n = pixels.shape[0]
        return self.head(self.project(self.vision(pixels.flatten(0, 1))).reshape(n, -1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="reach", help="a Meta-World task (default reach)")
    parser.add_argument("--train", type=int, default=50, help="training scenes, seeds 0..N-1 (default 50)")
    parser.add_argument("--test", type=int, default=200, help="unseen scenes, seeds from 1,000,000 (default 200)")
    parser.add_argument("--target", choices=["goal", "object"], default="goal")
    parser.add_argument("--size", type=int, default=96, help="render size in pixels (default 96)")
    parser.add_argument("--shift", type=int, default=4, help="random-shift augmentation in pixels (the preset's 4)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--policy", help="probe this checkpoint's own image tokens, frozen (a pretrained_model dir)")
    args = parser.parse_args()
    torch.manual_seed(0)

    print(f"rendering {args.train} training and {args.test} unseen scenes of metaworld/{args.task} ...", flush=True)
    frames, goals, objects, cameras, instruction = render_scenes(args.task, range(args.train), args.size)
    test_frames, test_goals, test_objects, _, _ = render_scenes(args.task, range(TEST_SEED, TEST_SEED + args.test),
                                                                args.size)  # fmt: skip
    y_train = torch.tensor(goals if args.target == "goal" else objects, dtype=torch.float32)
    y_test = torch.tensor(test_goals if args.target == "goal" else test_objects, dtype=torch.float32)
    mean, std = y_train.mean(0), y_train.std(0).clamp_min(1e-3)  # a fixed coordinate (z on the table) stays 0

    if args.policy:  # the checkpoint's tokens, standardised per feature; no augmentation (they are fixed)
        from vla.policies.inference import InferencePolicy

        runner = InferencePolicy.load(args.policy)  # loaded once for both sets
        x_train = policy_tokens(runner, frames, cameras, instruction)
        x_test = policy_tokens(runner, test_frames, cameras, instruction)
        centre, scale = x_train.mean(0), x_train.std(0) + 1e-5
        x_train, x_test = (x_train - centre) / scale, (x_test - centre) / scale
        probe: nn.Module = nn.Sequential(nn.Linear(x_train.shape[1], 256), nn.GELU(), nn.Linear(256, 3))
    else:
        x_train, x_test = to_pixels(frames), to_pixels(test_frames)
        probe = Probe(len(cameras), args.size)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-3, weight_decay=1e-4)
    guess = (y_test - mean).abs().mean(0).numpy()
    print(f"always guessing the training mean: |error| x, y, z = {np.round(guess * 100, 1)} cm")
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = torch.randint(0, args.train, (32,))
        inputs = x_train[batch]
        if not args.policy:
            inputs = random_shift(inputs.flatten(0, 1), args.shift).reshape(inputs.shape)
        loss = ((probe(inputs) - (y_train[batch] - mean) / std) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 250 == 0 or step == args.steps:
            with torch.no_grad():
                predicted = probe.eval()(x_test) * std + mean
            probe.train()
            error = (predicted - y_test).abs().mean(0).numpy()
            distance = (predicted - y_test).norm(dim=1)
            print(f"step {step}: training loss {loss.item():.3f} (1 = the mean guess); unseen scenes |error| x, y, z ="
                  f" {np.round(error * 100, 1)} cm, within 5 cm {(distance < 0.05).float().mean().item():.0%},"
                  f" median {distance.median().item() * 100:.1f} cm  ({time.perf_counter() - start:.0f} s)",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
