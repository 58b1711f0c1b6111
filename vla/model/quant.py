"""int8 inference weights: per-output-channel weights, per-token activations quantised on the fly.

CPUs without AMX run bfloat16 matmuls slower than float32, but they do have int8 dot products (AVX-512 VNNI):
on the 2-core bench machine `torch._int_mm` ran the fused layers' shapes 1.9-3.0x faster than float32, counting
the quantisation of the activations (`benchmarks/bench_model.py`'s int8 rows give the whole-chunk figures).
A weight W (in, out) is stored as round(W / s_w) in int8 with one scale per output column,
s_w = max |W[:, j]| / 127; each matmul quantises its input rows the same way (s_x = max |x_i| / 127) and rescales
the int32 products: x W ~ (q_x q_W) * s_x s_w.

It serves every fused layer that no gradient passes through: all of inference, and in training the frozen vision
tower and text layers, whose int8 features the trained expert then learns from (as QLoRA trains adapters over a
quantised frozen model); the expert itself trains in float. Rounding has no gradient, so an int8 weight that meets
an input needing one (real-time chunking's guidance differentiates through the expert) multiplies it as a
dequantised float copy, made once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Int8Weight:
    q: torch.Tensor  # (in, out) int8
    scale: torch.Tensor  # (out,) float32
    _dequantized: torch.Tensor | None = field(default=None, repr=False)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        """q * scale as a float (in, out) matrix, made on first use and kept (guidance calls it every step)."""
        if self._dequantized is None or self._dequantized.dtype != dtype:
            self._dequantized = (self.q.to(dtype) * self.scale.to(dtype)).contiguous()
        return self._dequantized


def quantize_weight(w: torch.Tensor) -> Int8Weight:
    """A float (in, out) weight -> int8 with a scale per output column."""
    w = w.detach().float()
    scale = w.abs().amax(dim=0).clamp_min(1e-12) / 127
    return Int8Weight(torch.round(w / scale).to(torch.int8).contiguous(), scale)


def int8_mm(x: torch.Tensor, w: Int8Weight) -> torch.Tensor:
    """x (N, in) float @ w -> (N, out) in x's dtype, through an int8 x int8 -> int32 matmul.

    When x needs a gradient (guidance through a cache built without one) the weight is dequantised instead and x
    stays float, so the product is differentiable.
    """
    if x.requires_grad and torch.is_grad_enabled():
        return x @ w.dequantized(x.dtype)
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-12) / 127
    xq = torch.round(x / scale).to(torch.int8)
    return torch._int_mm(xq, w.q).float().mul_(scale).mul_(w.scale).to(x.dtype)
