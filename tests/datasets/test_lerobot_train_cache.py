"""`lerobot-train --policy.type=vla` trains from the frame cache, found automatically beside the dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vla.datasets.cli import main

LEROBOT_TRAIN = str(Path(sys.executable).with_name("lerobot-train"))


@pytest.mark.slow
def test_lerobot_train_reads_the_cache(video_ds: Path, fresh_copy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = fresh_copy(video_ds)
    assert main(["data", "cache", str(root), "--size", "16x20"]) == 0  # a size the dataset itself does not have
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("VLA_FRAME_CACHE", None)  # the default, auto: use the cache because it exists
    args = [LEROBOT_TRAIN, "--policy.type=vla", "--policy.preset=tiny", "--policy.chunk_size=4",
            "--policy.n_action_steps=4", "--dataset.repo_id=local/test", f"--dataset.root={root}",
            f"--output_dir={tmp_path / 'train'}", "--steps=2", "--save_freq=2", "--batch_size=4", "--num_workers=2",
            "--log_freq=1", "--policy.push_to_hub=false", "--policy.device=cpu", "--wandb.enable=false",
            "--eval_freq=0"]  # fmt: skip
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "using frame cache" in out and "step:2" in out
    assert "uint8 frames" in out  # the VLA takes the compact transport (it scales frames itself)
    checkpoint = tmp_path / "train" / "checkpoints" / "000002" / "pretrained_model"
    config = json.loads((checkpoint / "config.json").read_text())
    # the policy was built from the dataset lerobot-train made: frames at the cached size, not the stored 24x32
    assert config["input_features"]["observation.images.front"]["shape"] == [3, 16, 20]
