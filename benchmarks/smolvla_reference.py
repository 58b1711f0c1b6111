"""Build LeRobot 0.4.4's SmolVLA offline with the same backbone shape as one of our presets.

SmolVLA loads its VLM config and processor with `from_pretrained(vlm_model_name)`; pointing that name at a local
directory holding a SmolVLM config, tokenizer and processor saved with `save_pretrained` builds it with random
weights and no network. The tokenizer is a small word-level one carrying SmolVLM's special image tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vla.model.backbone import hf_config
from vla.model.config import VLAModelConfig

SPECIAL = {"fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
           "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"}


def save_local_vlm(cfg: VLAModelConfig, path: Path, words: Iterable[str] | None = None) -> Path:
    """A SmolVLM config, tokenizer and processor of `cfg`'s sizes in `path`. The tokenizer is word-level and
    lower-cases: `words` (e.g. every word of a dataset's instructions, so that SmolVLA can read them) or, by
    default, 200 placeholder words (enough to time the model, not to tell instructions apart)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor

    vocabulary = sorted({w.lower() for w in words}) if words is not None else [f"w{i}" for i in range(200)]
    tokens = ["<pad>", "<unk>", *SPECIAL.values(), *vocabulary]
    if len(tokens) > cfg.text.vocab_size:
        raise ValueError(f"{len(tokens)} tokens do not fit the text model's vocabulary of {cfg.text.vocab_size}")
    hf = hf_config(cfg.replace(num_vlm_layers=cfg.text.num_layers))
    hf.save_pretrained(path)
    inner = Tokenizer(models.WordLevel({w: i for i, w in enumerate(tokens)}, unk_token="<unk>"))
    inner.normalizer = normalizers.Lowercase()
    inner.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=inner, pad_token="<pad>", unk_token="<unk>",
                                  extra_special_tokens=SPECIAL)
    size = cfg.vision.image_size
    images = SmolVLMImageProcessor(size={"longest_edge": size}, max_image_size={"longest_edge": size})
    SmolVLMProcessor(image_processor=images, tokenizer=tok, video_processor=SmolVLMVideoProcessor(),
                     image_seq_len=cfg.tokens_per_image).save_pretrained(path)
    return path


def make_smolvla(cfg: VLAModelConfig, vlm_dir: Path, features: dict[str, Any], outputs: dict[str, Any],
                 device: str = "cpu", **overrides: Any) -> Any:
    """SmolVLA of `cfg`'s shape, on `device`; `overrides` are further SmolVLAConfig fields (e.g. compile_model)."""
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    size = cfg.vision.image_size
    config = SmolVLAConfig(vlm_model_name=str(vlm_dir), load_vlm_weights=False, num_vlm_layers=cfg.num_vlm_layers,
                           chunk_size=cfg.chunk_size, n_action_steps=cfg.chunk_size, num_steps=cfg.num_steps,
                           resize_imgs_with_padding=(size, size), device=device, push_to_hub=False, **overrides)
    config.input_features, config.output_features = dict(features), dict(outputs)
    return SmolVLAPolicy(config).to(device)
