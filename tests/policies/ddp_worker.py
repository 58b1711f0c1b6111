"""Run under `accelerate launch --multi_gpu --num_processes 2 ddp_worker.py OUT`: three DDP training steps of a tiny
VLA the way `lerobot-train` takes them (LeRobot's `set_seed`, which seeds every rank alike; an optimizer over
`get_optim_params()`; one `accelerator.prepare`), but with `find_unused_parameters=False`, so DDP fails if any
trainable weight goes without a gradient. Each rank writes what it saw to OUT/rank<r>.json: its losses, a sum of
the flow-matching noise it drew, and a checksum of its weights after each step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from lerobot.configs import FeatureType, PolicyFeature
from lerobot.utils.random_utils import set_seed

import vla.model.vla as vla_model
from vla.policies.configuration_vla import VLAConfig
from vla.policies.modeling_vla import VLAPolicy


def main(out: Path) -> None:
    accelerator = Accelerator(cpu=True, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])
    set_seed(1000, accelerator=accelerator)
    cfg = VLAConfig(preset="tiny", chunk_size=4, n_action_steps=4, num_steps=2, device="cpu", push_to_hub=False)
    cfg.input_features = {"observation.images.front": PolicyFeature(type=FeatureType.VISUAL, shape=(3, 32, 32)),
                          "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(3,))}
    cfg.output_features = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(3,))}
    policy = VLAPolicy(cfg)  # random backbone: the VLM trains too (the case with most weights to cover)
    noise_sums: list[float] = []
    original = vla_model.noisy_actions

    def recording(actions: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise_sums.append(float(noise.sum()))
        return original(actions, noise, t)

    vla_model.noisy_actions = recording  # type: ignore[assignment]
    optimizer = torch.optim.AdamW(policy.get_optim_params(), lr=1e-3)
    ddp, optimizer = accelerator.prepare(policy, optimizer)
    g = torch.Generator().manual_seed(0)  # the same data on both ranks: only the noise may differ
    batch = {"observation.images.front": torch.rand(2, 3, 32, 32, generator=g),
             "observation.state": torch.randn(2, 3, generator=g),
             "observation.language.tokens": torch.randint(3, 200, (2, 8), generator=g),
             "observation.language.attention_mask": torch.ones(2, 8, dtype=torch.bool),
             "action": torch.randn(2, 4, 3, generator=g), "action_is_pad": torch.zeros(2, 4, dtype=torch.bool)}
    losses, checksums = [], []
    ddp.train()
    for _ in range(3):
        loss, _ = ddp(batch)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss))
        checksums.append(float(sum(p.detach().double().sum() for p in policy.parameters())))
    rank = accelerator.process_index
    (out / f"rank{rank}.json").write_text(json.dumps({"losses": losses, "noise": noise_sums,
                                                      "checksums": checksums, "world": accelerator.num_processes}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
