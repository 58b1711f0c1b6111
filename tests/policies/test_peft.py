"""LoRA fine-tuning through LeRobot's `--peft.*` flags: only the adapters (and the modules named to train whole)
change, the checkpoint holds the adapters, and it reloads for inference with the adapters merged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

LEROBOT_TRAIN = str(Path(sys.executable).with_name("lerobot-train"))
COMMON = ["--batch_size=4", "--num_workers=0", "--log_freq=1", "--policy.push_to_hub=false", "--policy.device=cpu",
          "--wandb.enable=false", "--env_eval_freq=0", "--steps=2", "--save_freq=2"]


def train(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([LEROBOT_TRAIN, *args, *COMMON], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]


@pytest.mark.slow
def test_lora_trains_adapters_only_and_reloads_merged(video_dataset: Path, tmp_path: Path) -> None:
    data = ["--dataset.repo_id=local/vla-synthetic", f"--dataset.root={video_dataset}"]
    train(["--policy.type=vla", "--policy.preset=tiny", "--policy.chunk_size=5", "--policy.n_action_steps=5", *data,
           f"--output_dir={tmp_path / 'base'}"], tmp_path)
    base_dir = tmp_path / "base" / "checkpoints" / "000002" / "pretrained_model"
    train([f"--policy.path={base_dir}", "--peft.r=4", "--policy.optimizer_lr=0.01",
           "--policy.scheduler_warmup_steps=1", *data, f"--output_dir={tmp_path / 'lora'}"], tmp_path)
    lora_dir = tmp_path / "lora" / "checkpoints" / "000002" / "pretrained_model"
    assert (lora_dir / "adapter_config.json").is_file() and (lora_dir / "adapter_model.safetensors").is_file()

    from peft import PeftModel

    from vla.policies.modeling_vla import VLAPolicy

    base, pre, _ = VLAPolicy.load_for_inference(base_dir)
    merged, _, _ = VLAPolicy.load_for_inference(lora_dir)
    before, after = base.state_dict(), merged.state_dict()
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("model.expert.layers.", "model.state_proj", "model.action_")) for k in changed)
    assert any(".self_attn.q_proj." in k for k in changed)  # a LoRA target moved
    assert not any(k.startswith("model.backbone.") for k in changed)  # the VLM did not

    # the adapters unmerged (PEFT's own layers, run through our fused inference path) act as the merged weights
    unmerged = PeftModel.from_pretrained(VLAPolicy.from_pretrained(base_dir), str(lora_dir)).eval()
    batch = pre({"observation.images.front": torch.rand(3, 32, 32), "observation.state": torch.zeros(2),
                 "task": "go to the red square"})
    noise = torch.randn(1, 5, merged.config.max_action_dim)
    a_merged = merged.predict_action_chunk(batch, noise=noise)
    a_unmerged = unmerged.predict_action_chunk(batch, noise=noise)
    assert torch.allclose(a_merged, a_unmerged, atol=1e-5)
    assert not torch.allclose(a_merged, base.predict_action_chunk(batch, noise=noise), atol=1e-3)
