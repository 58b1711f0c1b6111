"""The action expert: a narrower Llama-style stack over the action tokens only.

Layer i either self-attends over [prefix; actions] (i % self_attn_every_n_layers == 0) or cross-attends from
the actions to the prefix. Heads and head size equal the VLM's, so expert queries meet VLM keys directly in
self-attention layers; in cross-attention layers the VLM's keys and values are first projected by the expert's
own `k_proj` / `v_proj` (kv width -> kv width). Those projections depend on the prefix only, so `project_prefix`
runs once per chunk and the result is cached with the prefix.
"""

from __future__ import annotations

from torch import nn

from vla.model.config import VLAModelConfig
from vla.model.layers import SwiGLU


class ExpertAttention(nn.Module):
    def __init__(self, width: int, num_heads: int, num_kv_heads: int, head_dim: int, cross: bool) -> None:
        super().__init__()
        kv_in = num_kv_heads * head_dim if cross else width
        self.q_proj = nn.Linear(width, num_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(kv_in, num_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(kv_in, num_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * head_dim, width, bias=False)


class ExpertLayer(nn.Module):
    def __init__(self, cfg: VLAModelConfig, cross: bool) -> None:
        super().__init__()
        t, width = cfg.text, cfg.expert_width
        self.cross = cross
        self.input_layernorm = nn.RMSNorm(width, eps=t.rms_norm_eps)
        self.self_attn = ExpertAttention(width, t.num_heads, t.num_kv_heads, t.head_dim, cross)
        self.post_attention_layernorm = nn.RMSNorm(width, eps=t.rms_norm_eps)
        self.mlp = SwiGLU(width, cfg.expert_intermediate)


class ActionExpert(nn.Module):
    def __init__(self, cfg: VLAModelConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            ExpertLayer(cfg, cross=not cfg.is_self_attn_layer(i)) for i in range(cfg.num_vlm_layers)
        )
        self.norm = nn.RMSNorm(cfg.expert_width, eps=cfg.text.rms_norm_eps)

    @property
    def blocks(self) -> list[ExpertLayer]:
        return list(self.layers)  # type: ignore[arg-type]
