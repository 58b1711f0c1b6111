"""End to end through LeRobot's own command: train on a generated video dataset, fine-tune, resume, reload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

LEROBOT_TRAIN = str(Path(sys.executable).with_name("lerobot-train"))
COMMON = ["--batch_size=4", "--num_workers=0", "--log_freq=1", "--policy.push_to_hub=false",
          "--policy.device=cpu", "--wandb.enable=false", "--env_eval_freq=0"]


def run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([LEROBOT_TRAIN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_lerobot_train_finetune_resume_and_reload(video_dataset: Path, tmp_path: Path) -> None:
    data = ["--dataset.repo_id=local/vla-synthetic", f"--dataset.root={video_dataset}"]
    out = run(["--policy.type=vla", "--policy.preset=tiny", "--policy.chunk_size=5", "--policy.n_action_steps=5",
               *data, f"--output_dir={tmp_path / 'train'}", "--steps=3", "--save_freq=3", *COMMON], tmp_path)
    assert "step:3" in out
    ckpt = tmp_path / "train" / "checkpoints" / "000003" / "pretrained_model"
    names = {p.name for p in ckpt.iterdir()}
    assert {"model.safetensors", "config.json", "policy_preprocessor.json", "policy_postprocessor.json"} <= names
    assert any("normalizer" in n for n in names)  # dataset statistics travel with the weights
    assert json.loads((ckpt / "config.json").read_text())["type"] == "vla"

    # fine-tune from the checkpoint
    out = run(["--policy.path=" + str(ckpt), *data, f"--output_dir={tmp_path / 'finetune'}", "--steps=2",
               "--save_freq=2", *COMMON], tmp_path)
    assert "step:2" in out

    # resume the first run to a later step
    out = run([f"--config_path={ckpt / 'train_config.json'}", "--resume=true", "--steps=5", "--save_freq=5"],
              tmp_path)
    assert "step:5" in out and "step:4" in out and "step:1 " not in out

    # reload in this process through LeRobot's factories and predict one chunk from a dataset sample
    from lerobot.configs import PreTrainedConfig
    from lerobot.datasets import LeRobotDataset
    from lerobot.policies import get_policy_class, make_pre_post_processors

    import lerobot_policy_vla  # noqa: F401  (registers the plugin, as lerobot-train does)

    final = tmp_path / "train" / "checkpoints" / "000005" / "pretrained_model"
    cfg = PreTrainedConfig.from_pretrained(final)
    cfg.pretrained_path = final
    policy = get_policy_class("vla").from_pretrained(final, config=cfg)
    pre, post = make_pre_post_processors(cfg, pretrained_path=str(final))
    sample = LeRobotDataset("local/vla-synthetic", root=video_dataset)[7]
    obs = {k: v for k, v in sample.items() if k.startswith("observation.")}
    obs["task"] = sample["task"]
    action = post(policy.select_action(pre(obs)))
    assert action.shape == (1, 2) and torch.isfinite(action).all()
