"""A trained checkpoint ready to act: the policy with the processors saved beside it, the arm's units in and out.

`InferencePolicy` is the one way rollouts, the inference worker and the policy server run a checkpoint:
- `chunk(batch, prefix=, delay=, rtc_mode=)`: one action chunk (B, T, A) in the arm's units. With `prefix` (the
  actions already committed for the start of the new chunk, in the arm's units) real-time chunking continues it;
  the prefix is normalised by the checkpoint's own normaliser step, the one that normalised actions in training.
- `act(batch)`: one action per env (B, A), executing `n_action_steps` of each chunk (LeRobot's `select_action`).

A batch holds `task` (one string or one per row), `observation.state` ((S,) or (B, S)) and each camera as
`observation.images.NAME`, uint8 (3, H, W) or (B, 3, H, W) as captured. Any LeRobot checkpoint loads by the `type`
in its config.json (ours, ACT, Diffusion Policy, SmolVLA, ...); those take float frames in [0, 1], ours scales
uint8 on its own device. Only ours (`ours`) continues a prefix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lerobot.processor import NormalizerProcessorStep, TransitionKey, create_transition
from torch import Tensor

from vla.policies.configuration_vla import RTC_MODES


class InferencePolicy:
    def __init__(self, policy: Any, pre: Any, post: Any, ours: bool) -> None:
        self.policy, self.pre, self.post, self.ours = policy, pre, post, ours
        self.config = policy.config
        self._normaliser = next((s for s in pre.steps if isinstance(s, NormalizerProcessorStep)), None)
        self._device = next(iter(policy.parameters())).device

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", dtype: str | None = None,
             compile: bool = False) -> InferencePolicy:  # fmt: skip
        """The checkpoint at `path` (a `pretrained_model` directory) in eval mode on `device`. `dtype` and
        `compile` override our checkpoints' inference settings (`VLAPolicy.set_inference`)."""
        config = Path(path) / "config.json"
        try:
            kind = json.loads(config.read_text()).get("type") if config.is_file() else None
        except ValueError as err:
            raise ValueError(f"cannot load the policy checkpoint {path}: {config} is not JSON ({err})") from err
        if kind in (None, "vla"):
            from vla.policies.modeling_vla import VLAPolicy

            return cls(*VLAPolicy.load_for_inference(path, device, dtype, compile), ours=True)
        if dtype is not None or compile:
            raise ValueError(f"{path} is a '{kind}' checkpoint; --dtype and --compile apply to ours ('vla') only")
        from lerobot.configs import PreTrainedConfig
        from lerobot.policies import get_policy_class, make_pre_post_processors

        cfg = PreTrainedConfig.from_pretrained(str(path))
        cfg.device = device
        policy = get_policy_class(cfg.type).from_pretrained(str(path), config=cfg).to(device).eval()
        pre, post = make_pre_post_processors(
            cfg, pretrained_path=str(path), preprocessor_overrides={"device_processor": {"device": device}})
        return cls(policy, pre, post, ours=False)

    def reset(self) -> None:
        self.policy.reset()

    @torch.no_grad()  # not inference_mode: guidance takes a vector-Jacobian product through the expert
    def chunk(self, batch: dict[str, Any], prefix: Tensor | None = None, delay: int = 0,
              rtc_mode: str | None = None) -> Tensor:  # fmt: skip
        """(B, T, A) actions in the arm's units for one observation per row. `prefix` ((d, A) or (B, d, A), the
        arm's units) is what the robot executes while the chunk is computed; `delay` how many of those actions
        will have run when it arrives. `rtc_mode` ("guidance", "training", "off"; default the checkpoint's)."""
        if rtc_mode is not None and rtc_mode not in RTC_MODES:
            raise ValueError(f"rtc_mode must be one of {RTC_MODES}, not '{rtc_mode}'")
        processed = self.pre(self._inputs(batch))
        if prefix is None or prefix.numel() == 0 or rtc_mode == "off":
            return self.post(self.policy.predict_action_chunk(processed))
        if not self.ours:
            raise ValueError(f"a '{self.config.type}' checkpoint cannot continue a prefix (real-time chunking)")
        left_over = self.normalise_actions(prefix if prefix.ndim == 3 else prefix[None])
        chunk = self.policy.predict_action_chunk(processed, inference_delay=delay, prev_chunk_left_over=left_over,
                                                 rtc_mode=rtc_mode)  # fmt: skip
        return self.post(chunk)

    @torch.inference_mode()
    def act(self, batch: dict[str, Any]) -> Tensor:
        """(B, A): the next action for each row, from a queue of `n_action_steps` per chunk (reset between
        episodes)."""
        return self.post(self.policy.select_action(self.pre(self._inputs(batch))))

    def normalise_actions(self, actions: Tensor) -> Tensor:
        """Actions in the arm's units -> the policy's normalised space, by the checkpoint's normaliser step."""
        if self._normaliser is None:
            return actions.float()
        transition = create_transition(action=actions.float().to(self._device))
        return self._normaliser(transition)[TransitionKey.ACTION]

    def _inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.ours:  # uint8 as captured: the policy scales it to [0, 1] on its device
            return batch
        return {k: v.float().div(255) if isinstance(v, Tensor) and v.dtype == torch.uint8 else v
                for k, v in batch.items()}  # fmt: skip
