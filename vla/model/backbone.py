"""The VLM backbone: a SmolVLM / Idefics3-family model from transformers, truncated to its first text layers.

Two ways in, same modules and parameter names either way (so our checkpoints load in both):
  * `Backbone.from_config(cfg)`: random weights from the sizes in `VLAModelConfig` (offline, any preset);
  * `Backbone.from_pretrained(path, cfg)`: weights from a local directory or hub id via transformers.
Only what the VLA uses is kept: vision tower, pixel-shuffle connector, token embedding, and the first
`num_vlm_layers` text layers (final norm and LM head are dropped). Images are resized with padding to the tower's
input size and mapped from [0, 1] to [-1, 1] (SigLIP normalisation).

With `cfg.vision.kind == "conv"` the tower and connector are `vla.model.conv_vision`'s convolutional tokenizer
and position-embedding projector instead (random weights only; the text part is the same).

Whenever the vision tower's weights cannot receive a gradient (inference, or training with `freeze_vlm`), its
encoder layers run on fused copies of their weights (`vla.model.fused.vision_layer`); otherwise, and for a tower
whose activation or dropout the fused layer does not implement, transformers' modules run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, PretrainedConfig, SmolVLMConfig

from vla.model import fused
from vla.model.config import TextConfig, VisionConfig, VLAModelConfig


def hf_config(cfg: VLAModelConfig) -> SmolVLMConfig:
    """transformers config with the sizes of `cfg`, text model already truncated to `num_vlm_layers`."""
    v, t = cfg.vision, cfg.text
    kwargs: dict[str, Any] = dict(
        vision_config={
            "hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size,
            "num_hidden_layers": v.num_layers, "num_attention_heads": v.num_heads,
            "image_size": v.image_size, "patch_size": v.patch_size,
        },
        text_config={
            "model_type": "llama", "hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
            "num_hidden_layers": cfg.num_vlm_layers, "num_attention_heads": t.num_heads,
            "num_key_value_heads": t.num_kv_heads, "vocab_size": t.vocab_size, "rope_theta": t.rope_theta,
            "rms_norm_eps": t.rms_norm_eps, "head_dim": t.head_dim, "pad_token_id": 0,
        },
        scale_factor=cfg.scale_factor,
        pad_token_id=0,
    )
    return SmolVLMConfig(**kwargs)


def rope_theta(text_config: PretrainedConfig) -> float:
    """The rotary base of a transformers text config: `rope_parameters["rope_theta"]` in transformers 5, the
    `rope_theta` attribute in configs written by 4.x; 10,000 (Llama's default) when neither is there."""
    params = getattr(text_config, "rope_parameters", None) or {}
    theta = params.get("rope_theta") if isinstance(params, dict) else None
    theta = theta if theta is not None else getattr(text_config, "rope_theta", None)
    return float(theta) if theta is not None else 10_000.0


def sizes_from_hf(hf: PretrainedConfig, cfg: VLAModelConfig) -> VLAModelConfig:
    """`cfg` with vision/text sizes and scale factor read from a transformers SmolVLM / Idefics3 config."""
    v, t = hf.vision_config, hf.text_config
    return cfg.replace(
        vision=VisionConfig(hidden_size=v.hidden_size, num_layers=v.num_hidden_layers,
                            num_heads=v.num_attention_heads, intermediate_size=v.intermediate_size,
                            image_size=v.image_size, patch_size=v.patch_size),
        text=TextConfig(hidden_size=t.hidden_size, num_layers=t.num_hidden_layers, num_heads=t.num_attention_heads,
                        num_kv_heads=t.num_key_value_heads, intermediate_size=t.intermediate_size,
                        vocab_size=t.vocab_size, rope_theta=rope_theta(t),
                        rms_norm_eps=t.rms_norm_eps),
        scale_factor=hf.scale_factor,
    )


def read_pretrained_sizes(path: str | Path, cfg: VLAModelConfig) -> VLAModelConfig:
    return sizes_from_hf(AutoConfig.from_pretrained(str(path)), cfg)


class Backbone(nn.Module):
    def __init__(self, vision: nn.Module, connector: nn.Module, text_model: Any, cfg: VLAModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision = vision
        self.connector = connector
        self.embed_tokens = text_model.embed_tokens
        self.layers = nn.ModuleList(list(text_model.layers)[: cfg.num_vlm_layers])
        self.image_size = cfg.vision.image_size
        vision_cfg = getattr(self.vision, "config", None)
        self._vision_fusable = (getattr(vision_cfg, "hidden_act", None) == "gelu_pytorch_tanh"
                                and not getattr(vision_cfg, "attention_dropout", 0.0))
        self._fused_vision = fused.FusedCache()
        self.int8 = False  # the fused tower's matmuls in int8 (`vla.model.quant`)

    @property
    def blocks(self) -> list[Any]:
        """The kept text layers (transformers Llama layers: attribute access is dynamic)."""
        return list(self.layers)

    @classmethod
    def from_config(cls, cfg: VLAModelConfig) -> Backbone:
        hf = hf_config(cfg)
        if cfg.vision.kind == "conv":
            from vla.model.conv_vision import ConvVision, TokenProjector

            text = AutoModel.from_config(hf.text_config, attn_implementation="sdpa")
            projector = TokenProjector(cfg.vision.hidden_size, cfg.text.hidden_size, cfg.tokens_per_image)
            return cls(ConvVision(cfg.vision, cfg.text.hidden_size), projector, text, cfg)
        vlm = AutoModel.from_config(hf, attn_implementation="sdpa")
        return cls(vlm.vision_model, vlm.connector, vlm.text_model, cfg)

    @classmethod
    def from_pretrained(cls, path: str | Path, cfg: VLAModelConfig) -> Backbone:
        if cfg.vision.kind != "siglip":
            raise ValueError(f"pretrained VLM weights ({path}) need the SigLIP tower, not vision kind "
                             f"{cfg.vision.kind!r}")
        full = AutoModelForImageTextToText.from_pretrained(str(path), attn_implementation="sdpa",
                                                           torch_dtype=torch.float32)
        vlm = full.model
        return cls(vlm.vision_model, vlm.connector, vlm.text_model, cfg)

    def preprocess_images(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 3, S, S) in [-1, 1]: aspect-preserving resize, zero (black) padding."""
        _n, _c, h, w = images.shape
        size = self.image_size
        if (h, w) != (size, size):
            scale = size / max(h, w)
            nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
            images = F.interpolate(images, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
            images = F.pad(images, (0, size - nw, 0, size - nh))
        return images * 2.0 - 1.0

    @property
    def image_dtype(self) -> torch.dtype:
        """The dtype the vision tower and connector hold their weights in."""
        return next(self.connector.parameters()).dtype

    def embed_images(self, pixels: torch.Tensor, language: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 3, S, S) preprocessed pixels -> (N, tokens_per_image, text_width). The conv tokenizer is conditioned
        on `language` (N, text_width), each image's instruction vector, when given; the SigLIP tower ignores it."""
        pixels = pixels.to(self.image_dtype)
        if self.cfg.vision.kind == "conv":
            hidden = self.vision(pixels, None if language is None else language.to(pixels.dtype))
        elif self.vision_fast_path:
            hidden = self._vision_fast(pixels)
        else:
            hidden = self.vision(pixel_values=pixels).last_hidden_state
        return self.connector(hidden)

    @property
    def vision_trainable(self) -> bool:
        """Whether any weight of the vision tower or connector takes gradients."""
        return any(p.requires_grad for m in (self.vision, self.connector) for p in m.parameters())

    @property
    def vision_fast_path(self) -> bool:
        """Whether the vision tower runs on fused weights: when none of its weights can get a gradient."""
        if not self._vision_fusable:
            return False
        return not (torch.is_grad_enabled() and any(p.requires_grad for p in self.vision.parameters()))

    def compile_vision(self) -> None:
        """torch.compile the fused vision layers (used whenever `vision_fast_path` holds)."""
        self._vision_layers = torch.compile(self._vision_layers, dynamic=False)  # type: ignore[method-assign]

    def _vision_layers(self, layers: list[fused.FusedVisionLayer], h: torch.Tensor, batch: int) -> torch.Tensor:
        for layer in layers:
            h = fused.vision_layer(layer, h, batch, self.cfg.vision.num_heads)
        return h

    def _vision_fast(self, pixels: torch.Tensor) -> torch.Tensor:
        """The vision tower's last hidden state (N, patches, D) for full (unmasked) images, on fused weights."""
        vis: Any = self.vision  # the transformers SigLIP tower (dynamic attributes)
        v = self.cfg.vision
        b, side = pixels.shape[0], v.image_size // v.patch_size
        every_patch = torch.ones(b, side, side, dtype=torch.bool, device=pixels.device)
        x = vis.embeddings(pixel_values=pixels, patch_attention_mask=every_patch)
        dtype = fused.compute_dtype(x)
        int8 = self.int8  # this path runs only when no weight here takes a gradient, and pixels never need one
        layers = self._fused_vision.get(list(vis.encoder.layers), dtype,
                                        lambda layer: fused.fuse_vision_layer(layer, dtype, int8), int8)
        h = self._vision_layers(layers, x.reshape(-1, x.shape[-1]).to(dtype), b)
        return vis.post_layernorm(h.view(x.shape))
