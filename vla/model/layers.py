"""Transformer pieces shared by the VLM text layers and the action expert.

Both stacks use the Llama layout (pre-RMSNorm, rotary q/k, grouped-query attention, SwiGLU MLP), with the same
attribute names as transformers' Llama layers (`input_layernorm`, `self_attn.q_proj`, ..., `mlp`), so one set
of functions drives a pretrained SmolVLM layer and our expert layer alike.

A layer's computation is written once, as the three steps every caller needs (`LayerRun`): queries, keys and
values with rotary applied; queries alone (the expert's cross-attention layers); and, given the attention output,
the output projection, residual and SwiGLU half. `ModuleStack` runs them on the layers' own modules (training:
parameters get gradients); `vla.model.fused.FusedStack` on fused copies of their weights (inference, int8). The
model's loops (`VLAModel.vlm_kv`, `VLAModel.denoise_step`) take either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn


def make_attn_mask(valid: torch.Tensor, ar_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) bool valid tokens, (L,) or (B, L) int block starts -> (B, L, L) bool, True where query may attend key.

    A token attends to every valid token whose block index (cumsum of `ar_mask`) is not greater than its own:
    ar_mask = [0, 0, 1, 1] makes the first two bidirectional and the last two causal after them. Only keys are
    masked by validity, so no row is ever empty (padding queries compute harmless values that nothing reads).
    """
    block = torch.cumsum(ar_mask.expand_as(valid).to(torch.int64), dim=-1)
    return (block[:, None, :] <= block[:, :, None]) & valid[:, None, :]


def positions_from_mask(valid: torch.Tensor, offset: torch.Tensor | int = 0) -> torch.Tensor:
    """(B, L) bool -> (B, L) int64 rotary positions counting valid tokens only, starting at `offset`."""
    return (torch.cumsum(valid.to(torch.int64), dim=-1) - 1).clamp(min=0) + offset


class Rotary(nn.Module):
    """Rotary position embedding with the Llama convention (halves rotated, not interleaved)."""

    inv_freq: torch.Tensor

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) positions -> cos, sin of shape (B, 1, L, head_dim)."""
        freqs = positions[..., None].float() * self.inv_freq
        emb = torch.cat([freqs, freqs], dim=-1)[:, None]
        return emb.cos(), emb.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


def split_heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(B, L, H*hd) -> (B, H, L, hd)."""
    b, length, _ = x.shape
    return x.view(b, length, -1, head_dim).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, L, hd) -> (B, L, H*hd)."""
    b, h, length, d = x.shape
    return x.transpose(1, 2).reshape(b, length, h * d)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Grouped-query attention. q (B, H, Lq, hd), k/v (B, Hkv, Lk, hd), mask bool broadcastable to (B, 1, Lq, Lk)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])


def mlp_block(layer: Any, x: torch.Tensor) -> torch.Tensor:
    """Residual SwiGLU half of a Llama layer."""
    return x + layer.mlp(layer.post_attention_layernorm(x))


class SwiGLU(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(width, hidden, bias=False)
        self.up_proj = nn.Linear(width, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


Rot = tuple[torch.Tensor, torch.Tensor]  # rotary tables in the form a stack's layers apply them


class LayerRun(Protocol):
    """One layer's computation on tokens h (B, L, D); attention itself is the caller's (`attention`)."""

    def qkv(self, h: torch.Tensor, rot: Rot) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> q (B, H, L, hd) and k (B, Hkv, L, hd) with rotary applied, v (B, Hkv, L, hd)."""
        ...

    def query(self, h: torch.Tensor) -> torch.Tensor:
        """-> q (B, H, L, hd) without rotary (cross-attention to cached keys)."""
        ...

    def finish(self, h: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """h + o_proj(attended (B, H, L, hd)), then the residual SwiGLU half."""
        ...


class Stack(Protocol):
    """How a list of layers executes: its `layers`, and the forms it wants its inputs in."""

    @property
    def layers(self) -> Sequence[LayerRun]: ...

    def enter(self, x: torch.Tensor) -> torch.Tensor: ...
    def rotary(self, cos: torch.Tensor, sin: torch.Tensor) -> Rot: ...
    def mask(self, mask: torch.Tensor) -> torch.Tensor: ...


class ModuleLayer:
    """A Llama-layout layer run on its own modules: the reference execution, and the one training uses."""

    def __init__(self, layer: Any, head_dim: int) -> None:
        self.layer, self.head_dim = layer, head_dim

    def qkv(self, h: torch.Tensor, rot: Rot) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attn, hd = self.layer.self_attn, self.head_dim
        x = self.layer.input_layernorm(h)
        q, k, v = split_heads(attn.q_proj(x), hd), split_heads(attn.k_proj(x), hd), split_heads(attn.v_proj(x), hd)
        return apply_rotary(q, *rot), apply_rotary(k, *rot), v

    def query(self, h: torch.Tensor) -> torch.Tensor:
        return split_heads(self.layer.self_attn.q_proj(self.layer.input_layernorm(h)), self.head_dim)

    def finish(self, h: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        return mlp_block(self.layer, h + self.layer.self_attn.o_proj(merge_heads(attended)))


class ModuleStack:
    """Layers on their modules: tokens in their own dtype, (cos, sin) tables, bool masks."""

    def __init__(self, layers: Sequence[Any], head_dim: int) -> None:
        self.layers = [ModuleLayer(layer, head_dim) for layer in layers]

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def rotary(self, cos: torch.Tensor, sin: torch.Tensor) -> Rot:
        return cos, sin

    def mask(self, mask: torch.Tensor) -> torch.Tensor:
        return mask
