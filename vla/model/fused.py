"""Inference fast path: Llama-style layers run on fused, norm-folded, pre-transposed copies of their weights.

At batch 1 the action expert works on 50 tokens, where a float32 matmul on a CPU is already near its peak and
the time goes to the many small operations around it. Outside training (eval mode, or with autograd off) each
layer is therefore run from a
`FusedLayer`, prepared once and reused for every chunk until a weight changes:
  * the RMSNorm weights are folded into the projections that follow them ((x / rms) * w) W^T = (x / rms)(W w)^T;
  * q, k and v are one matmul (the expert's cross-attention layers have q only), gate and up are one matmul;
  * weights are stored transposed and contiguous ((in, out)), which is 10-25% faster for these shapes than
    `F.linear`'s transposed view, and the residual additions are fused into the output matmuls (`addmm`);
  * rotary embedding is applied to queries and keys together, as x cos + roll(x) sin' with the sign folded in.
The arithmetic is the same as the module path up to float rounding (the tests compare the two).

The copies cost memory (the expert's and the kept VLM text layers' weights, once more) and are rebuilt whenever a
parameter is replaced or modified in place (`load_state_dict`, an optimiser step, `.to()`), which the key catches.
Gradients flow to the inputs (real-time chunking's guidance needs d v / d x) but never to the parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vla.model.quant import Int8Weight, int8_mm, quantize_weight

Weight = torch.Tensor | Int8Weight  # a fused matmul weight (in, out)


@dataclass(frozen=True)
class FusedLayer:
    w_in: Weight  # (D, q [+ k + v]) input norm folded in
    b_in: torch.Tensor | None
    w_o: Weight  # (q, D)
    b_o: torch.Tensor | None
    w_gate_up: Weight  # (D, 2F) post-attention norm folded in
    w_down: Weight  # (F, D)
    eps: float


def _norm_eps(norm: Any) -> float:
    eps = getattr(norm, "eps", None)  # nn.RMSNorm
    if eps is None:
        eps = getattr(norm, "variance_epsilon", None)  # transformers' LlamaRMSNorm
    if eps is None:
        raise TypeError(f"cannot read the epsilon of {type(norm).__name__}")
    return float(eps)


def dense_weight(lin: nn.Module) -> torch.Tensor:
    """A linear layer's effective (out, in) weight. A PEFT LoRA layer whose adapters are not merged computes
    base(x) + B(A(x)) * scale; its `.weight` is the base weight alone, so the adapters' deltas are added here."""
    base = getattr(lin, "base_layer", None)
    if base is None or getattr(lin, "merged", True):
        return lin.weight  # type: ignore[return-value]
    weight = base.weight
    for name in lin.active_adapters:  # type: ignore[union-attr]
        if name in getattr(lin, "lora_A", {}):
            weight = weight + lin.get_delta_weight(name)  # type: ignore[operator]
    return weight


def _cat_bias(*linears: nn.Linear) -> torch.Tensor | None:
    if all(lin.bias is None for lin in linears):
        return None
    return torch.cat([lin.bias if lin.bias is not None else torch.zeros(lin.out_features, device=lin.weight.device,
                                                                        dtype=lin.weight.dtype) for lin in linears])


@torch.no_grad()
def fuse_layer(layer: Any, q_only: bool, dtype: torch.dtype, int8: bool = False) -> FusedLayer:
    """One Llama-layout layer (ours or transformers') -> its fused weights in `dtype` (matmul weights in int8
    with `int8`, see `vla.model.quant`)."""
    attn, mlp = layer.self_attn, layer.mlp
    norm_in, norm_post = layer.input_layernorm, layer.post_attention_layernorm
    if _norm_eps(norm_in) != _norm_eps(norm_post):
        raise ValueError("the two RMSNorms of a layer have different epsilons")
    if mlp.gate_proj.bias is not None or mlp.up_proj.bias is not None or mlp.down_proj.bias is not None:
        raise ValueError("MLP projections with biases are not supported by the fused path")
    projections = [attn.q_proj] if q_only else [attn.q_proj, attn.k_proj, attn.v_proj]
    w_in = torch.cat([dense_weight(p) for p in projections]) * norm_in.weight
    w_gate_up = torch.cat([dense_weight(mlp.gate_proj), dense_weight(mlp.up_proj)]) * norm_post.weight
    b_in, b_o = _cat_bias(*projections), attn.o_proj.bias

    def prep(w: torch.Tensor) -> Weight:
        return quantize_weight(w.t()) if int8 else w.t().to(dtype).contiguous()

    return FusedLayer(w_in=prep(w_in), b_in=None if b_in is None else b_in.to(dtype),
                      w_o=prep(dense_weight(attn.o_proj)), b_o=None if b_o is None else b_o.detach().to(dtype),
                      w_gate_up=prep(w_gate_up), w_down=prep(dense_weight(mlp.down_proj)), eps=_norm_eps(norm_in))


def weights_key(modules: list[nn.Module], dtype: torch.dtype) -> tuple[Any, ...]:
    """Changes whenever a parameter of `modules` is replaced, moved or modified in place."""
    return (dtype, *((p.data_ptr(), p._version) for m in modules for p in m.parameters()))


class FusedCache:
    """Fused copies of a list of modules' weights, rebuilt only when those weights change."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._layers: list[Any] = []

    def get(self, layers: list[Any], dtype: torch.dtype, build: Callable[[Any], Any], int8: bool = False
            ) -> list[Any]:  # fmt: skip
        """`build(layer)` for each layer, from the cache while no weight of `layers` has changed (and the same
        `int8` choice is asked for)."""
        key = (int8, *weights_key(layers, dtype))
        if key != self._key:
            self._layers = [build(layer) for layer in layers]
            self._key = key
        return self._layers


def compute_dtype(like: torch.Tensor) -> torch.dtype:
    """The dtype matmuls run in: autocast's when it is on for this device, else that of `like`."""
    device = like.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else like.dtype


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool mask (True = may attend) -> 0 / -inf in `dtype`, which attention adds without a conversion per call."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))


def rotary_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Llama (cos, sin) tables -> (cos, signed sin) so that rope(x) = x cos + roll(x, hd / 2) sin'."""
    half = sin.shape[-1] // 2
    return cos, torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)


def rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(x * cos, torch.roll(x, x.shape[-1] // 2, dims=-1), signed_sin)


def linear(x: torch.Tensor, w: Weight, b: torch.Tensor | None, residual: torch.Tensor | None = None
           ) -> torch.Tensor:  # fmt: skip
    """x (N, in) @ w (in, out) [+ b] [+ residual (N, out)], as one matmul where possible."""
    if isinstance(w, Int8Weight):
        out = int8_mm(x, w)
        if b is not None:
            out = out.add_(b)
        return out if residual is None else out.add_(residual)
    if residual is not None:
        out = torch.addmm(residual, x, w)
        return out if b is None else out.add_(b)
    return x @ w if b is None else torch.addmm(b, x, w)


def norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), None, eps)


class FusedLayerRun:
    """`vla.model.layers.LayerRun` on a `FusedLayer`: the same computation as the module path, in fewer and larger
    operations on flat tokens (B * L, D)."""

    def __init__(self, layer: FusedLayer, heads: int, kv_heads: int, head_dim: int) -> None:
        self.layer, self.heads, self.kv_heads, self.head_dim = layer, heads, kv_heads, head_dim

    def qkv(self, h: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor]
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        b, length, width = h.shape
        heads, kv = self.heads, self.kv_heads
        flat = norm(h.reshape(b * length, width), self.layer.eps)
        qkv = linear(flat, self.layer.w_in, self.layer.b_in).view(b, length, heads + 2 * kv, self.head_dim)
        qkv = qkv.transpose(1, 2)
        qk = rope(qkv[:, : heads + kv], *rot)
        return qk[:, :heads], qk[:, heads:], qkv[:, heads + kv :]

    def query(self, h: torch.Tensor) -> torch.Tensor:
        b, length, width = h.shape
        q = linear(norm(h.reshape(b * length, width), self.layer.eps), self.layer.w_in, self.layer.b_in)
        return q.view(b, length, self.heads, self.head_dim).transpose(1, 2)

    def finish(self, h: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        b, length, width = h.shape
        flat = h.reshape(b * length, width)
        flat = linear(attended.transpose(1, 2).reshape(b * length, -1), self.layer.w_o, self.layer.b_o, residual=flat)
        gate, up = linear(norm(flat, self.layer.eps), self.layer.w_gate_up, None).chunk(2, dim=-1)
        return linear(F.silu(gate) * up, self.layer.w_down, None, residual=flat).view(b, length, width)


class FusedStack:
    """Layers on fused weights in one compute dtype: tokens cast to it on entry, (cos, signed sin) tables,
    additive masks (built once per stack call, not once per layer)."""

    def __init__(self, layers: list[FusedLayer], heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype):
        self.layers = [FusedLayerRun(layer, heads, kv_heads, head_dim) for layer in layers]
        self.dtype = dtype

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype)

    def rotary(self, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rotary_tables(cos.to(self.dtype), sin.to(self.dtype))

    def mask(self, mask: torch.Tensor) -> torch.Tensor:
        return additive_mask(mask, self.dtype)


# ---------------------------------------------------------------------- the SigLIP vision tower
@dataclass(frozen=True)
class FusedVisionLayer:
    """A pre-norm SigLIP encoder layer with both LayerNorms' scale and shift folded into the matmuls after them."""

    w_qkv: Weight  # (D, 3D)
    b_qkv: torch.Tensor
    w_o: Weight  # (D, D)
    b_o: torch.Tensor
    w_fc1: Weight  # (D, F)
    b_fc1: torch.Tensor
    w_fc2: Weight  # (F, D)
    b_fc2: torch.Tensor
    eps: float


@torch.no_grad()
def fuse_vision_layer(layer: Any, dtype: torch.dtype, int8: bool = False) -> FusedVisionLayer:
    """transformers' SigLIP / SmolVLM encoder layer -> fused weights in `dtype` (matmul weights in int8 with `int8`).

    LayerNorm then linear, (n(x) g + s) W^T + c = n(x) (W g)^T + (W s + c), with n the plain normalisation.
    """
    attn, mlp, ln1, ln2 = layer.self_attn, layer.mlp, layer.layer_norm1, layer.layer_norm2
    if ln1.eps != ln2.eps:
        raise ValueError("the two LayerNorms of a vision layer have different epsilons")
    w_qkv = torch.cat([dense_weight(attn.q_proj), dense_weight(attn.k_proj), dense_weight(attn.v_proj)])
    b_qkv = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
    fc1 = dense_weight(mlp.fc1)

    def prep(w: torch.Tensor) -> Weight:
        return quantize_weight(w.t()) if int8 else w.t().to(dtype).contiguous()

    return FusedVisionLayer(
        w_qkv=prep(w_qkv * ln1.weight), b_qkv=(b_qkv + w_qkv @ ln1.bias).to(dtype),
        w_o=prep(dense_weight(attn.out_proj)), b_o=attn.out_proj.bias.to(dtype),
        w_fc1=prep(fc1 * ln2.weight), b_fc1=(mlp.fc1.bias + fc1 @ ln2.bias).to(dtype),
        w_fc2=prep(dense_weight(mlp.fc2)), b_fc2=mlp.fc2.bias.to(dtype), eps=float(ln1.eps),
    )


def vision_layer(layer: FusedVisionLayer, h: torch.Tensor, batch: int, heads: int) -> torch.Tensor:
    """Flat patch tokens h (B * N, D) -> the layer's output, for images whose patches are all valid (no mask).

    The attention runs without a mask (transformers' SDPA path adds a (B, 1, N, N) zero mask here), the residual
    additions happen inside the output matmuls and GELU (tanh) works in place.
    """
    width = h.shape[-1]
    x = F.layer_norm(h, (width,), None, None, layer.eps)
    qkv = linear(x, layer.w_qkv, layer.b_qkv).view(batch, -1, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
    h = linear(out.transpose(1, 2).reshape(h.shape), layer.w_o, layer.b_o, residual=h)
    x = linear(F.layer_norm(h, (width,), None, None, layer.eps), layer.w_fc1, layer.b_fc1)
    x = torch.ops.aten.gelu_(x, approximate="tanh")
    return linear(x, layer.w_fc2, layer.b_fc2, residual=h)
