"""Multi-process training through `accelerate launch` (DDP on two CPU processes, gloo), as on several GPUs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BIN = Path(sys.executable).parent
HERE = Path(__file__).parent


def launch(args: list[str], cwd: Path) -> str:
    with socket.socket() as s:  # a free port for the rendezvous, so parallel runs do not collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port), *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    return out


@pytest.mark.slow
def test_ranks_draw_their_own_noise_and_stay_in_step(tmp_path: Path) -> None:
    launch([str(HERE / "ddp_worker.py"), str(tmp_path)], tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    for r in ranks:
        assert all(torch.isfinite(torch.tensor(r["losses"])))
    # LeRobot seeds both ranks alike; each must still draw its own flow-matching noise at every step
    assert all(a != b for a, b in zip(ranks[0]["noise"], ranks[1]["noise"], strict=True))
    # gradients are averaged: the weights are the same on both ranks after every step, and they do change
    assert ranks[0]["checksums"] == ranks[1]["checksums"]
    assert len(set(ranks[0]["checksums"])) == 3


@pytest.mark.slow
def test_vla_train_on_two_processes_saves_a_checkpoint_that_reloads(video_dataset: Path, tmp_path: Path) -> None:
    out = launch([str(BIN / "vla"), "train", "--policy.type=vla", "--policy.preset=tiny", "--policy.chunk_size=5",
                  "--policy.n_action_steps=5", "--dataset.repo_id=local/vla-synthetic",
                  f"--dataset.root={video_dataset}", f"--output_dir={tmp_path / 'train'}", "--steps=2",
                  "--save_freq=2", "--batch_size=4", "--num_workers=0", "--log_freq=1", "--policy.push_to_hub=false",
                  "--policy.device=cpu", "--wandb.enable=false", "--env_eval_freq=0"], tmp_path)  # fmt: skip
    assert "Effective batch size: 4 x 2 = 8" in out
    from vla.policies.modeling_vla import VLAPolicy

    policy, pre, post = VLAPolicy.load_for_inference(tmp_path / "train" / "checkpoints" / "000002" / "pretrained_model")
    batch = pre({"observation.images.front": torch.rand(3, 32, 32), "observation.state": torch.zeros(2),
                 "task": "go to the red square"})
    action = post(policy.select_action(batch))
    assert action.shape == (1, 2) and torch.isfinite(action).all()
