"""The VLA network: VLM prefix, action expert suffix, flow-matching loss and Euler sampling with a prefix cache.

Token layout (block index in brackets; a token attends to valid tokens of its own and earlier blocks):
    prefix = [camera tokens..., language tokens] [0]  +  [state token] [1]
    suffix = action tokens, one block each (causal among themselves)
The prefix never attends to the actions, so everything it determines is computed once per chunk by
`fill_cache`: per-layer VLM keys/values (self-attention layers) or their expert projections (cross-attention
layers), masks, and the actions' rotary tables. `denoise_step(x_t, t, cache)` then runs only the expert.

Notable: when training with a frozen VLM, the camera and language tokens never depend on a trainable weight,
so `fill_cache` runs them without autograd and pushes only the single state token through the VLM layers with
gradients (it attends to the cached camera/language keys). Training then backpropagates through one VLM token
instead of the whole prefix. At inference the prefix is one pass. `denoise_full` is the plain joint pass over
[prefix; suffix] that the cache must agree with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vla.model import fused, rtc
from vla.model.backbone import Backbone
from vla.model.config import VLAModelConfig
from vla.model.conv_vision import random_shift
from vla.model.expert import ActionExpert, ExpertLayer
from vla.model.flow import loss_mask, masked_mse, noisy_actions, posemb_sincos, sample_time
from vla.model.image_cache import ImageEmbeddingCache
from vla.model.layers import (
    ModuleStack,
    Rot,
    Rotary,
    Stack,
    attention,
    make_attn_mask,
    merge_heads,
    positions_from_mask,
    split_heads,
)
from vla.model.observation import Observation, pad_last_dim

KV = tuple[torch.Tensor, torch.Tensor]


@dataclass
class PrefixCache:
    """What one observation determines for all denoising steps of a chunk (B batch, P prefix, H chunk), in the
    forms its expert `stack` runs on (bool masks and (cos, sin) for the modules; additive masks and signed tables
    for fused weights)."""

    keys: list[torch.Tensor]  # per expert layer (B, Hkv, P, hd)
    values: list[torch.Tensor]
    self_mask: torch.Tensor  # (B, 1, H, P + H): valid prefix, then causal actions
    cross_mask: torch.Tensor  # (B, 1, 1, P)
    rot: Rot  # rotary tables at the action positions, (B, 1, H, hd) each
    stack: Stack  # how the expert's layers execute: `ModuleStack` in training, `fused.FusedStack` otherwise

    def repeat(self, k: int) -> PrefixCache:
        """Each observation's cache k times in a row (B*k batch), for k draws of noise per observation."""
        if k == 1:
            return self

        def rep(x: torch.Tensor) -> torch.Tensor:
            return x.repeat_interleave(k, dim=0)

        return PrefixCache([rep(x) for x in self.keys], [rep(x) for x in self.values], rep(self.self_mask),
                           rep(self.cross_mask), (rep(self.rot[0]), rep(self.rot[1])), self.stack)  # fmt: skip


class VLAModel(nn.Module):
    def __init__(self, cfg: VLAModelConfig, backbone: Backbone | None = None) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.backbone = backbone if backbone is not None else Backbone.from_config(cfg)
        self.expert = ActionExpert(cfg)
        width, ew = cfg.vlm_width, cfg.expert_width
        self.state_proj = nn.Linear(cfg.max_state_dim, width)
        self.action_in_proj = nn.Linear(cfg.max_action_dim, ew)
        self.action_time_mlp_in = nn.Linear(2 * ew, ew)
        self.action_time_mlp_out = nn.Linear(ew, ew)
        self.action_out_proj = nn.Linear(ew, cfg.max_action_dim)
        self.rotary = Rotary(cfg.text.head_dim, cfg.text.rope_theta)
        self._fused_expert = fused.FusedCache()
        self._fused_vlm = fused.FusedCache()
        self.int8 = False  # see `use_int8`
        self.image_cache: ImageEmbeddingCache | None = None  # see `vla.model.image_cache`; the policy sets it
        if cfg.fast_vocab_size:  # FAST action tokens in, their next token out (`losses`)
            self.fast_embed = nn.Embedding(cfg.fast_vocab_size, width)
            self.fast_norm = nn.RMSNorm(width, eps=cfg.text.rms_norm_eps)
            self.fast_head = nn.Linear(width, cfg.fast_vocab_size, bias=False)
        if cfg.freeze_vlm:
            self.backbone.requires_grad_(False)
        elif not cfg.fast_vocab_size:  # (the FAST head reads the last layer's output)
            # The expert reads only the keys and values of the last kept VLM layer: its queries, attention output,
            # MLP and second norm never reach the loss. Frozen, they take no gradient that would always be None
            # (which makes DDP wait for them, or need find_unused_parameters), and they keep their weights.
            last: Any = self.backbone.layers[-1]
            for unused in (last.self_attn.q_proj, last.self_attn.o_proj, last.mlp, last.post_attention_layernorm):
                unused.requires_grad_(False)

    def compile_layers(self) -> None:
        """torch.compile the vision tower, the VLM layers' pass and the denoising step, on either execution (the
        training step's backward is compiled by inductor too); one compile per input shape and execution."""
        self.backbone.compile_vision()
        self.vlm_kv = torch.compile(self.vlm_kv, dynamic=False)  # type: ignore[method-assign]
        self._expert_velocity = torch.compile(self._expert_velocity, dynamic=False)  # type: ignore[method-assign]

    def use_int8(self, on: bool = True) -> None:
        """Run the fused layers' matmuls in int8 (`vla.model.quant`) wherever no gradient is wanted: inference, and
        in training the frozen vision tower and text layers (the trained expert stays in the activations' dtype)."""
        self.int8 = self.backbone.int8 = on

    @property
    def int8_now(self) -> bool:
        return self.int8 and not torch.is_grad_enabled()

    @property
    def fast_path(self) -> bool:
        """Whether layers run on fused weights (`vla.model.fused`): whenever no parameter gradient can be wanted,
        i.e. unless training with autograd on. Inputs still get gradients (real-time chunking's guidance)."""
        return not (self.training and torch.is_grad_enabled())

    # ------------------------------------------------------------------ embeddings
    def embed_prefix(self, obs: Observation) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> context (B, Lc, D) camera+language embeddings, their validity (B, Lc), state token (B, 1, D)."""
        b, n = obs.image_masks.shape
        language = self.backbone.embed_tokens(obs.tokens)
        images = self.embed_cameras(obs.images, self.instruction_vector(language, obs.token_mask))
        per_image = images.shape[1]
        images = images.view(n, b, per_image, -1).transpose(0, 1).reshape(b, n * per_image, -1)
        image_valid = obs.image_masks.repeat_interleave(per_image, dim=1)
        context = torch.cat([images, language.to(images.dtype)], dim=1)
        valid = torch.cat([image_valid, obs.token_mask], dim=1)
        state = obs.state
        if self.training and self.cfg.state_noise:
            state = state + self.cfg.state_noise * torch.randn_like(state)
        state = pad_last_dim(state, self.cfg.max_state_dim, "state")
        return context, valid, self.state_proj(state)[:, None]

    def instruction_vector(self, language: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """The mean of an instruction's token embeddings (B, D), which conditions the conv tokenizer (None for the
        SigLIP tower, which takes no condition)."""
        if self.cfg.vision.kind != "conv":
            return None
        weights = mask.to(language.dtype)[..., None]
        return (language * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def embed_cameras(self, cameras: list[torch.Tensor], language: torch.Tensor | None = None) -> torch.Tensor:
        """N cameras' (B, 3, H, W) images in [0, 1] -> (N*B, tokens_per_image, D), camera-major. `language` (B, D)
        conditions the conv tokenizer (`instruction_vector`)."""
        backbone = self.backbone
        shift = self.cfg.augment_shift if self.training else 0

        def compute(images: list[torch.Tensor]) -> torch.Tensor:
            present = [im for im in images if len(im)]
            pixels = torch.cat([backbone.preprocess_images(im) for im in present])
            condition = None if language is None else language.repeat(len(present), 1)
            return backbone.embed_images(random_shift(pixels, shift), condition)

        if (self.image_cache is None or not self.training or shift or language is not None
                or backbone.vision_trainable):  # fmt: skip
            return compute(cameras)
        dtype = fused.compute_dtype(next(backbone.connector.parameters()))
        token = (fused.weights_key([backbone.vision, backbone.connector], dtype), backbone.image_size, backbone.int8)
        return self.image_cache.embed(cameras, compute, token)

    def embed_suffix(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t (B, H, A), t (B,) or per-token (B, H) -> action tokens (B, H, expert_width)."""
        cfg = self.cfg
        time = posemb_sincos(t, cfg.expert_width, cfg.min_period, cfg.max_period)
        time = time[:, None].expand(-1, x_t.shape[1], -1) if t.ndim == 1 else time
        tokens = self.action_in_proj(x_t)
        fused = self.action_time_mlp_in(torch.cat([tokens, time.to(tokens.dtype)], dim=-1))
        return self.action_time_mlp_out(nn.functional.silu(fused))

    # ------------------------------------------------------------------ how the layers execute
    def vlm_stack(self, fast: bool, dtype: torch.dtype) -> Stack:
        """The kept VLM text layers on their modules, or (`fast`) on fused weights in `dtype`."""
        return self._stack(self.backbone.blocks, self._fused_vlm, fast, dtype)

    def expert_stack(self, fast: bool, dtype: torch.dtype) -> Stack:
        """The action expert's layers on their modules, or (`fast`) on fused weights in `dtype`."""
        return self._stack(self.expert.blocks, self._fused_expert, fast, dtype)

    def _stack(self, blocks: list[Any], cache: fused.FusedCache, fast: bool, dtype: torch.dtype) -> Stack:
        text = self.cfg.text
        if not fast:
            return ModuleStack(blocks, text.head_dim)
        int8 = self.int8_now  # a cross-attention layer (the expert's) fuses its query projection only
        layers = cache.get(blocks, dtype, lambda layer: fused.fuse_layer(layer, getattr(layer, "cross", False), dtype,
                                                                          int8), int8)  # fmt: skip
        return fused.FusedStack(layers, text.num_heads, text.num_kv_heads, text.head_dim, dtype)

    def _cross_kv(self, layer: ExpertLayer, k: torch.Tensor, v: torch.Tensor) -> KV:
        """Project one layer's prefix keys/values (B, Hkv, P, hd) into the expert's cross-attention space."""
        hd, attn = self.cfg.text.head_dim, layer.self_attn
        return split_heads(attn.k_proj(merge_heads(k)), hd), split_heads(attn.v_proj(merge_heads(v)), hd)

    # ------------------------------------------------------------------ prefix: the VLM layers, once per chunk
    def vlm_kv(self, stack: Stack, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
               past: list[KV] | None = None) -> list[KV]:
        """Run tokens x (B, L, D) through the VLM layers -> per-layer (k, v) of these tokens.

        mask (B, 1, L or 1, Lpast + L) bool says which keys each token sees; `past` holds earlier tokens'
        per-layer keys/values, which are attended to but not recomputed.
        """
        return self._vlm_run(stack, x, positions, mask, past)[0]

    def _vlm_run(self, stack: Stack, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                 past: list[KV] | None = None, output: bool = False) -> tuple[list[KV], torch.Tensor]:
        """`vlm_kv`, and with `output` the last layer's output tokens (B, L, D) too (else the input x: the expert
        reads only keys and values, so the last layer's attention output and MLP are skipped)."""
        rot, mask, x = stack.rotary(*self.rotary(positions)), stack.mask(mask), stack.enter(x)
        out: list[KV] = []
        for i, layer in enumerate(stack.layers):
            q, k, v = layer.qkv(x, rot)
            out.append((k, v))
            if i == len(stack.layers) - 1 and not output:
                break
            if past is not None:
                k, v = torch.cat([past[i][0], k], dim=2), torch.cat([past[i][1], v], dim=2)
            x = layer.finish(x, attention(q, k, v, mask))
        return out, x

    def _prefix_kv(self, context: torch.Tensor, ctx_valid: torch.Tensor, state: torch.Tensor) -> list[KV]:
        """Per-layer keys/values of the prefix [context; state] (B, Hkv, Lc + 1, hd)."""
        b, dev = context.shape[0], context.device
        one = torch.ones(b, 1, dtype=torch.bool, device=dev)
        dtype = fused.compute_dtype(context)
        if not (torch.is_grad_enabled() and self.cfg.freeze_vlm):
            valid = torch.cat([ctx_valid, one], dim=1)
            ar = torch.zeros(valid.shape[1], device=dev)
            ar[-1] = 1  # the state token sees the context; the context does not see it
            mask = make_attn_mask(valid, ar)[:, None]
            return self.vlm_kv(self.vlm_stack(self.fast_path, dtype), torch.cat([context, state], dim=1),
                               positions_from_mask(valid), mask)  # fmt: skip
        # Training a frozen VLM: the context depends on no trainable weight, so it runs without autograd (on the
        # fused weights), and only the state token (which the trainable state projection feeds) goes through
        # with gradients.
        with torch.no_grad():
            ctx_kv = self.vlm_kv(self.vlm_stack(True, dtype), context, positions_from_mask(ctx_valid),
                                 ctx_valid[:, None, None, :])  # fmt: skip
        state_mask = torch.cat([ctx_valid, one], dim=1)[:, None, None, :]
        state_kv = self.vlm_kv(self.vlm_stack(False, dtype), state, ctx_valid.sum(dim=1, keepdim=True), state_mask,
                               past=ctx_kv)  # fmt: skip
        return [(torch.cat([kc, ks], dim=2), torch.cat([vc, vs], dim=2))
                for (kc, vc), (ks, vs) in zip(ctx_kv, state_kv, strict=True)]

    def _fast_prefix_kv(self, context: torch.Tensor, ctx_valid: torch.Tensor, state: torch.Tensor,
                        ids: torch.Tensor, ids_valid: torch.Tensor, per_sample: bool) -> tuple[list[KV], torch.Tensor]:
        """The prefix's per-layer keys/values as `_prefix_kv` gives them, and the FAST tokens' cross-entropy (a
        scalar, or (B,)): the VLM runs [context; state; FAST tokens but the last], each FAST token a causal block
        after the state (so the prefix never sees them), and predicts FAST token j at the position before it
        (the first at the state token). ids, ids_valid (B, T) from `vla.model.fast.FastTokenizer.encode`."""
        b, p, dev = context.shape[0], context.shape[1] + 1, context.device
        inputs = self.fast_embed(ids[:, :-1]).to(context.dtype)
        valid = torch.cat([ctx_valid, torch.ones(b, 1, dtype=torch.bool, device=dev), ids_valid[:, :-1]], dim=1)
        ar = torch.zeros(valid.shape[1], device=dev)
        ar[p - 1 :] = 1
        kv, out = self._vlm_run(self.vlm_stack(False, fused.compute_dtype(context)),
                                torch.cat([context, state, inputs], dim=1), positions_from_mask(valid),
                                make_attn_mask(valid, ar)[:, None], output=True)  # fmt: skip
        kv = [(k[:, :, :p], v[:, :, :p]) for k, v in kv]
        if self.cfg.fast_insulate:
            kv = [(k.detach(), v.detach()) for k, v in kv]
        logits = self.fast_head(self.fast_norm(out[:, p - 1 :]))
        ce = F.cross_entropy(logits.float().transpose(1, 2), ids, reduction="none") * ids_valid
        if per_sample:
            return kv, ce.sum(1) / ids_valid.sum(1).clamp(min=1)
        return kv, ce.sum() / ids_valid.sum().clamp(min=1)

    def fill_cache(self, obs: Observation, chunk_len: int) -> PrefixCache:
        context, ctx_valid, state = self.embed_prefix(obs)
        return self._cache(self._prefix_kv(context, ctx_valid, state), ctx_valid, chunk_len)

    def _cache(self, prefix_kv: list[KV], ctx_valid: torch.Tensor, chunk_len: int) -> PrefixCache:
        """The expert's `PrefixCache` from the prefix's per-layer VLM keys/values."""
        b, dev = ctx_valid.shape[0], ctx_valid.device
        keys, values = [], []
        for layer, (k, v) in zip(self.expert.blocks, prefix_kv, strict=True):
            if layer.cross:
                k, v = self._cross_kv(layer, k, v)
            keys.append(k)
            values.append(v)

        prefix_valid = torch.cat([ctx_valid, torch.ones(b, 1, dtype=torch.bool, device=dev)], dim=1)
        p = prefix_valid.shape[1]
        causal = torch.ones(chunk_len, chunk_len, dtype=torch.bool, device=dev).tril()
        self_mask = torch.cat([prefix_valid[:, None, None, :].expand(b, 1, chunk_len, p),
                               causal.expand(b, 1, chunk_len, chunk_len)], dim=-1)
        steps = torch.arange(chunk_len, device=dev)
        cos, sin = self.rotary(ctx_valid.sum(dim=1, keepdim=True) + 1 + steps)
        stack = self.expert_stack(self.fast_path, fused.compute_dtype(keys[0]))
        return PrefixCache(keys, values, stack.mask(self_mask), stack.mask(prefix_valid[:, None, None, :]),
                           stack.rotary(cos, sin), stack)  # fmt: skip

    # ------------------------------------------------------------------ suffix: the expert, once per step
    def denoise_step(self, x_t: torch.Tensor, t: torch.Tensor, cache: PrefixCache) -> torch.Tensor:
        """Velocity v_t (B, H, A) at noisy actions x_t (B, H, A) and flow time t ((B,) or per-token (B, H))."""
        return self._expert_velocity(self.embed_suffix(x_t, t), cache)

    def _expert_velocity(self, h: torch.Tensor, cache: PrefixCache) -> torch.Tensor:
        stack = cache.stack
        h = stack.enter(h)
        for i, (block, layer) in enumerate(zip(self.expert.blocks, stack.layers, strict=True)):
            if block.cross:
                out = attention(layer.query(h), cache.keys[i], cache.values[i], cache.cross_mask)
            else:
                q, k, v = layer.qkv(h, cache.rot)
                k = torch.cat([cache.keys[i], k], dim=2)
                v = torch.cat([cache.values[i], v], dim=2)
                out = attention(q, k, v, cache.self_mask)
            h = layer.finish(h, out)
        return self.action_out_proj(self._final_norm(h))

    def _final_norm(self, h: torch.Tensor) -> torch.Tensor:
        norm = self.expert.norm  # its weight in h's dtype: bfloat16 h with a float32 weight misses the fused kernel
        return F.rms_norm(h, (h.shape[-1],), norm.weight.to(h.dtype), norm.eps)

    # ------------------------------------------------------------------ reference path
    def denoise_full(self, obs: Observation, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The same velocity as `denoise_step`, by one joint pass over [prefix; suffix] with no cache, on the
        modules: the reference the cached and fused executions are tested against."""
        context, ctx_valid, state = self.embed_prefix(obs)
        prefix = torch.cat([context, state], dim=1)
        suffix = self.embed_suffix(x_t, t)
        b, p, s = prefix.shape[0], prefix.shape[1], suffix.shape[1]
        dev = prefix.device
        valid = torch.cat([ctx_valid, torch.ones(b, 1 + s, dtype=torch.bool, device=dev)], dim=1)
        ar = torch.cat([torch.zeros(context.shape[1], device=dev), torch.ones(1 + s, device=dev)])
        mask = make_attn_mask(valid, ar)[:, None]
        cos, sin = self.rotary(positions_from_mask(valid))
        rot_p, rot_s = (cos[:, :, :p], sin[:, :, :p]), (cos[:, :, p:], sin[:, :, p:])
        vlm, expert = self.vlm_stack(False, prefix.dtype), self.expert_stack(False, prefix.dtype)
        hp, hs = prefix, suffix
        for block, vlm_layer, layer in zip(self.expert.blocks, vlm.layers, expert.layers, strict=True):
            qp, kp, vp = vlm_layer.qkv(hp, rot_p)
            if block.cross:
                out_p = attention(qp, kp, vp, mask[:, :, :p, :p])
                out_s = attention(layer.query(hs), *self._cross_kv(block, kp, vp), mask[:, :, p:, :p])
            else:
                qs, ks, vs = layer.qkv(hs, rot_s)
                out = attention(torch.cat([qp, qs], 2), torch.cat([kp, ks], 2), torch.cat([vp, vs], 2), mask)
                out_p, out_s = out[:, :, :p], out[:, :, p:]
            hp, hs = vlm_layer.finish(hp, out_p), layer.finish(hs, out_s)
        return self.action_out_proj(self._final_norm(hs))

    # ------------------------------------------------------------------ training and sampling
    def compute_loss(self, obs: Observation, actions: torch.Tensor, action_is_pad: torch.Tensor,
                     noise: torch.Tensor | None = None, time: torch.Tensor | None = None,
                     per_sample: bool = False, delay: torch.Tensor | None = None,
                     fast: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The training loss: `losses`' flow-matching MSE plus `cfg.fast_loss_weight` times its FAST
        cross-entropy (when `fast` tokens are given)."""
        return self.total_loss(self.losses(obs, actions, action_is_pad, noise, time, per_sample, delay, fast))

    def total_loss(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """`losses`' parts summed: flow, plus `cfg.fast_loss_weight` times fast when present."""
        return parts["flow"] + self.cfg.fast_loss_weight * parts["fast"] if "fast" in parts else parts["flow"]

    def losses(self, obs: Observation, actions: torch.Tensor, action_is_pad: torch.Tensor,
               noise: torch.Tensor | None = None, time: torch.Tensor | None = None, per_sample: bool = False,
               delay: torch.Tensor | None = None, fast: tuple[torch.Tensor, torch.Tensor] | None = None
               ) -> dict[str, torch.Tensor]:  # fmt: skip
        """{"flow": masked flow-matching MSE} and, given FAST token ids and validity (B, T) (`vla.model.fast`),
        "fast": their next-token cross-entropy; each a scalar, or (B,) with per_sample.

        actions (B, H, A) with A <= max_action_dim; action_is_pad (B, H) bool; noise like the padded actions;
        time (B,) or per-token (B, H). Training-time RTC (`cfg.rtc_max_delay` > 0, or an explicit `delay` (B,)):
        each sample's first `delay` actions are given clean (flow time 0) and left out of the loss. In training,
        with noise, time and delay drawn here, `cfg.flow_samples` draws per observation share one prefix pass.
        """
        cfg = self.cfg
        action_dim = actions.shape[-1]
        actions = pad_last_dim(actions, cfg.max_action_dim, "action")
        draws = cfg.flow_samples if self.training and noise is None and time is None and delay is None else 1
        if draws > 1:  # each observation's targets repeated: B*draws rows, consecutive per observation
            actions, action_is_pad = actions.repeat_interleave(draws, 0), action_is_pad.repeat_interleave(draws, 0)
        b, h = actions.shape[:2]
        noise = torch.randn_like(actions) if noise is None else noise
        time = sample_time(b, actions.device) if time is None else time
        mask = loss_mask(action_is_pad, action_dim, cfg.max_action_dim)
        if delay is None and cfg.rtc_max_delay and self.training:
            delay = rtc.sample_delays(b, cfg.rtc_max_delay, actions.device)
        if delay is not None:
            time = rtc.prefix_times(time, delay, h)
            mask = mask * (torch.arange(h, device=mask.device)[None, :, None] >= delay[:, None, None])
        x_t, u_t = noisy_actions(actions, noise, time)
        parts = {}
        if fast is None:
            cache = self.fill_cache(obs, h)
        elif not self.cfg.fast_vocab_size:
            raise ValueError("FAST tokens given to a model built without them (fast_vocab_size=0)")
        else:
            context, ctx_valid, state = self.embed_prefix(obs)
            kv, parts["fast"] = self._fast_prefix_kv(context, ctx_valid, state, *fast, per_sample)
            cache = self._cache(kv, ctx_valid, h)
        v_t = self.denoise_step(x_t, time, cache.repeat(draws))
        loss = masked_mse(v_t, u_t, mask, per_sample)
        parts["flow"] = loss.view(-1, draws).mean(1) if per_sample and draws > 1 else loss
        return parts

    @torch.no_grad()
    def sample_actions(self, obs: Observation, noise: torch.Tensor | None = None, num_steps: int | None = None,
                       use_cache: bool = True, samples: int = 1) -> torch.Tensor:
        """Euler integration from t=1 (noise) to t=0 -> actions (B, chunk_size, max_action_dim). `samples` > 1
        integrates that many noise draws (or the leading dimension of `noise`, (samples, B, chunk, dim)) over one
        prefix and returns their mean; the draws run as one batch of B*samples through the expert."""
        cfg = self.cfg
        steps = num_steps or cfg.num_steps
        b, dev = obs.batch_size, obs.state.device
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        shape = (b, cfg.chunk_size, cfg.max_action_dim)
        if noise is None:  # drawn before the prefix, as a single sample always was
            noise = torch.randn(shape if samples == 1 else (samples, *shape), device=dev)
        # each observation's draws in consecutive rows, as `PrefixCache.repeat` lays out its cache
        x = noise if samples == 1 else noise.transpose(0, 1).reshape(b * samples, *shape[1:])
        cache = self.fill_cache(obs, cfg.chunk_size).repeat(samples) if use_cache else None
        full_obs = obs.repeat(samples) if cache is None else obs
        for i in range(steps):
            t = torch.full((b * samples,), 1.0 - i / steps, device=dev)
            v = self.denoise_step(x, t, cache) if cache is not None else self.denoise_full(full_obs, x, t)
            x = x - v / steps
        return x if samples == 1 else x.view(b, samples, *shape[1:]).mean(1)
