"""Multi-process training through `accelerate launch` (DDP on two CPU processes, gloo), as on several GPUs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import torch

BIN = Path(sys.executable).parent
HERE = Path(__file__).parent


def abort_with_stacks(proc: subprocess.Popen[str]) -> str:
    """SIGABRT a hung `accelerate launch` and its workers one at a time (faulthandler prints each one's stacks, not
    interleaved), with the launcher held still meanwhile so it cannot stop a worker first; the last of the output,
    without faulthandler's lists of extension modules. Nothing of the run is left alive."""
    launcher = psutil.Process(proc.pid)
    workers = launcher.children(recursive=True)
    with contextlib.suppress(psutil.Error):
        launcher.suspend()
    for process in [*workers, launcher]:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGABRT)
            if process is launcher:
                launcher.resume()
            process.wait(timeout=10)
    for process in [*workers, launcher]:
        with contextlib.suppress(psutil.Error):
            process.kill()
    out, _ = proc.communicate(timeout=30)
    return "\n".join(line for line in out.splitlines() if not line.startswith("Extension modules:"))[-12000:]


def launch(args: list[str], cwd: Path, timeout: float = 300) -> str:
    """`accelerate launch` two CPU processes; the combined output. A run that outlives `timeout` (a normal one takes
    under a minute) is stopped with SIGABRT, so that every process prints where it stood (faulthandler), and the
    test fails with those stacks instead of a bare timeout; no process is left behind to slow the tests after."""
    with socket.socket() as s:  # a free port for the rendezvous, so parallel runs do not collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "PYTHONFAULTHANDLER": "1"}
    cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port), *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out = abort_with_stacks(proc)
        pytest.fail(f"two-process run still going after {timeout:.0f} s; the stacks each process printed:\n{out}")
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
