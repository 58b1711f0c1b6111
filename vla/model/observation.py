"""The model's typed input. Inside `vla/model` observations are attribute access, never string keys.

Fields (B = batch, N = cameras, L = language tokens):
    images       N tensors float32 (B, 3, H, W) in [0, 1], one per camera; each camera any H, W (resized with
                 padding inside the model)
    image_masks  bool    (B, N)   False where a camera is missing: its tokens are masked out of attention
    state        float32 (B, S)   S <= max_state_dim; zero-padded to max_state_dim inside the model
    tokens       int64   (B, L)   language token ids
    token_mask   bool    (B, L)   False on padding
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from vla.model.config import VLAModelConfig


def pad_last_dim(x: torch.Tensor, size: int, what: str) -> torch.Tensor:
    """Zero-pad the last dimension to `size`; a larger input is an error that names `what`."""
    if x.shape[-1] > size:
        raise ValueError(f"{what} has dimension {x.shape[-1]}, above the model's maximum of {size}")
    return F.pad(x, (0, size - x.shape[-1]))


@dataclass
class Observation:
    images: list[torch.Tensor]
    image_masks: torch.Tensor
    state: torch.Tensor
    tokens: torch.Tensor
    token_mask: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.state.shape[0])

    def repeat(self, k: int) -> Observation:
        """Each observation k times in a row (B*k batch), the layout of `PrefixCache.repeat`."""
        if k == 1:
            return self

        def rep(x: torch.Tensor) -> torch.Tensor:
            return x.repeat_interleave(k, dim=0)

        return Observation(images=[rep(im) for im in self.images], image_masks=rep(self.image_masks),
                           state=rep(self.state), tokens=rep(self.tokens), token_mask=rep(self.token_mask))

    def to(self, device: torch.device | str) -> Observation:
        return Observation(images=[im.to(device) for im in self.images], image_masks=self.image_masks.to(device),
                           state=self.state.to(device), tokens=self.tokens.to(device),
                           token_mask=self.token_mask.to(device))

    @staticmethod
    def fake(cfg: VLAModelConfig, batch_size: int, num_cameras: int = 1, seed: int = 0,
             state_dim: int | None = None) -> Observation:
        g = torch.Generator().manual_seed(seed)
        size = cfg.vision.image_size
        length = min(cfg.tokenizer_max_length, 12)
        token_mask = torch.ones(batch_size, length, dtype=torch.bool)
        token_mask[0, length // 2:] = False  # one sample with padded language, as real batches have
        return Observation(
            images=[torch.rand(batch_size, 3, size, size, generator=g) for _ in range(num_cameras)],
            image_masks=torch.ones(batch_size, num_cameras, dtype=torch.bool),
            state=torch.randn(batch_size, state_dim or cfg.max_state_dim, generator=g),
            tokens=torch.randint(0, cfg.text.vocab_size, (batch_size, length), generator=g),
            token_mask=token_mask,
        )
