"""How closely a checkpoint's sampled action chunks follow a dataset's demonstrations, task by task, open loop.

    .venv/bin/python benchmarks/fit_by_task.py --policy CKPT --data DATASET [--frames 128] [--horizon 8]

For each task of DATASET (a LeRobot v3 dataset with a frame cache, `vla data cache`) it draws `--frames` frames
(seed 0), asks the policy for its action chunk at each (the checkpoint's own pre- and postprocessor, its own
inference settings) and prints the mean squared difference from the demonstrated actions over the first
`--horizon` steps, in the dataset's raw action units, so that checkpoints trained with different normalisation
statistics compare; once over all the task's frames and once over each episode's first five frames (where, in
Meta-World, only the image says where the goal is). Run it on the checkpoint's own training data for how well it
fits, and on another recording of the same tasks for how well it generalises. Open-loop error is not success: a
policy can follow held-out demonstrations as closely as another and still fail in closed loop (docs/learning.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import default_collate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, required=True, help="a checkpoint's pretrained_model directory")
    parser.add_argument("--data", type=Path, required=True, help="a LeRobot v3 dataset directory with a frame cache")
    parser.add_argument("--frames", type=int, default=128, help="frames drawn per task (and per first-frames set)")
    parser.add_argument("--horizon", type=int, default=8, help="chunk steps compared")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from lerobot.datasets import LeRobotDatasetMetadata, resolve_delta_timestamps

    from vla.datasets.cached_dataset import CachedLeRobotDataset, open_dataset
    from vla.policies.modeling_vla import VLAPolicy

    policy, pre, post = VLAPolicy.load_for_inference(args.policy)
    repo_id = f"local/{args.data.name}"
    meta = LeRobotDatasetMetadata(repo_id, root=args.data)
    dataset = open_dataset(repo_id, args.data, mode="on", return_uint8=True,
                           delta_timestamps=resolve_delta_timestamps(policy.config, meta))  # fmt: skip
    assert isinstance(dataset, CachedLeRobotDataset)
    episodes = meta.episodes
    task_of = np.empty(meta.total_frames, dtype=object)
    frame_of = np.empty(meta.total_frames, dtype=np.int64)
    for start, stop, tasks in zip(episodes["dataset_from_index"], episodes["dataset_to_index"], episodes["tasks"],
                                  strict=True):  # fmt: skip
        task_of[start:stop], frame_of[start:stop] = str(tasks[0]), np.arange(stop - start)
    rng = np.random.default_rng(0)
    print(f"{'task':40s} {'frames':>8s} {'chunk MSE':>10s}   (first {args.horizon} steps, raw action units)")
    for task in dict.fromkeys(task_of):
        for label, rows in (("all", task_of == task), ("first 5", (task_of == task) & (frame_of < 5))):
            picked = rng.choice(np.flatnonzero(rows), size=min(args.frames, int(rows.sum())), replace=False)
            errors = []
            for start in range(0, len(picked), 32):
                batch = default_collate([dataset[int(r)] for r in picked[start : start + 32]])
                truth = batch["action"][:, : args.horizon].clone()
                torch.manual_seed(start)
                chunk = policy.predict_action_chunk(pre(batch))[:, : args.horizon]
                raw = post(chunk.reshape(-1, chunk.shape[-1])).reshape(truth.shape)
                errors.append(((raw - truth) ** 2).mean(dim=(1, 2)))
            print(f"{task[:40]:40s} {label:>8s} {float(torch.cat(errors).mean()):10.4f}   n={len(picked)}", flush=True)


if __name__ == "__main__":
    main()
