"""`VLAPolicy`: LeRobot's policy interface around `vla.model.VLAModel`.

This file translates LeRobot's string-keyed batches into the model's typed `Observation` and checks them on the
way: camera names and state size must match what the policy was built with, and each mismatch is reported with
the expected and the received keys or shapes. Cameras the policy knows but a batch lacks are masked out.
Checkpoints load strictly (a missing or unexpected weight is an error, not a silent random init), and loading
a checkpoint never re-reads pretrained VLM weights: the checkpoint has them.
"""

from __future__ import annotations

import contextvars
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lerobot.policies import PreTrainedPolicy
from lerobot.utils.constants import (
    ACTION,
    OBS_IMAGE,
    OBS_IMAGES,
    OBS_LANGUAGE_ATTENTION_MASK,
    OBS_LANGUAGE_TOKENS,
    OBS_STATE,
)
from torch import Tensor

from vla.allocator import keep_freed_memory
from vla.model import Observation, VLAModel, rtc
from vla.model.backbone import Backbone
from vla.model.fast import FastTokenizer, chunks_from_episodes
from vla.model.image_cache import ImageEmbeddingCache
from vla.policies.configuration_vla import DTYPES, VLAConfig

ACTION_IS_PAD = f"{ACTION}_is_pad"
_loading_checkpoint = contextvars.ContextVar("vla_loading_checkpoint", default=False)


def is_camera_key(key: str) -> bool:
    return (key == OBS_IMAGE or key.startswith(OBS_IMAGES + ".")) and not key.endswith("_is_pad")


TOKEN_BUCKET = 16


def pad_tokens(tokens: Tensor, mask: Tensor, multiple: int) -> tuple[Tensor, Tensor]:
    """Right-pad (B, L) language tokens and mask to a multiple of `multiple` (padding is masked out).

    Compiled graphs are specialised to the prefix length, which follows the batch's longest instruction; bucketing
    it keeps the number of compiles small (one per bucket, not one per instruction length).
    """
    extra = -tokens.shape[1] % multiple
    if not extra:
        return tokens, mask
    return F.pad(tokens, (0, extra)), F.pad(mask, (0, extra), value=False)


def fit_fast_tokenizer(dataset_meta: Any, config: VLAConfig, stride: int = 2) -> FastTokenizer:
    """The FAST tokenizer fitted on a LeRobot dataset's action chunks (every `stride`-th frame's chunk of
    `chunk_size` actions, normalised with the dataset's mean and standard deviation as the policy's processor
    normalises them), read from its parquet files."""
    from vla.datasets.lerobot_io import LeRobotSource

    columns = LeRobotSource(dataset_meta.root).read_lowdim([ACTION, "episode_index"])
    actions, episodes = columns[ACTION].astype(np.float32), columns["episode_index"]
    stats = dataset_meta.stats[ACTION]
    mean, std = np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)
    assert config.chunk_size is not None  # resolved in __post_init__
    chunks = chunks_from_episodes((actions - mean) / (std + 1e-8), episodes, config.chunk_size, stride)
    return FastTokenizer.fit(torch.from_numpy(chunks), config.fast_vocab_size, config.fast_scale)


def offset_rng_per_rank() -> bool:
    """Give each process of a distributed run its own torch random stream, once; True when done (or not needed).

    LeRobot's `set_seed` seeds every rank alike, so without this every GPU would draw the same flow-matching noise
    and times for its share of the batch, and the effective batch would teach no more than one rank's. The new
    seed is drawn from the seeded stream (so runs stay reproducible) plus the rank.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return True
    base = int(torch.randint(0, 2**62, (1,)))  # the same on every rank: they were seeded alike
    torch.manual_seed(base + dist.get_rank())
    return True


class VLAPolicy(PreTrainedPolicy):
    config_class = VLAConfig
    name = "vla"
    # The repeated blocks FSDP shards one by one (accelerate's `fsdp_transformer_layer_cls_to_wrap`; LeRobot's next
    # release reads this attribute): the expert's layers, the VLM's text layers and its vision encoder layers.
    _fsdp_wrap_modules = ("ExpertLayer", "LlamaDecoderLayer", "SmolVLMEncoderLayer")

    def __init__(self, config: VLAConfig, dataset_meta: Any = None, **kwargs: Any) -> None:
        super().__init__(config)
        config.validate_features()
        tasks = getattr(dataset_meta, "tasks", None)
        if tasks is not None and not _loading_checkpoint.get():  # a checkpoint keeps the tokenizer it was trained with
            config.adopt_dataset_tasks([str(task) for task in tasks.index])
        config.resolve_tokenizer()
        if config.fast_on and config.fast_tokenizer is None and dataset_meta is not None:
            config.fast_tokenizer = fit_fast_tokenizer(dataset_meta, config).to_json()
        self.fast = config.fast_tokens() if config.fast_on else None
        self.config: VLAConfig = config
        if config.keep_freed_memory:
            keep_freed_memory()
        model_cfg = config.model_config()
        backbone = None
        if config.vlm_path and config.load_vlm_weights and not _loading_checkpoint.get():
            backbone = Backbone.from_pretrained(config.vlm_path, model_cfg)
        self.model = VLAModel(model_cfg, backbone)
        if config.dtype == "bfloat16" and config.vlm_frozen:
            # A frozen backbone needs no float32 master copy: store it in bfloat16 once instead of letting
            # autocast convert every weight on every call (for the 500M shape that conversion alone is costly).
            self.model.backbone.to(torch.bfloat16)
        self.model.use_int8(config.dtype == "int8")
        if config.compile:
            self.model.compile_layers()
        if config.image_cache_mb:
            self.model.image_cache = ImageEmbeddingCache(config.image_cache_mb << 20)
        self.camera_keys = list(config.image_features)
        action = config.action_feature
        assert action is not None  # validate_features guarantees it
        self.action_dim = action.shape[0]
        self.state_dim = config.robot_state_feature.shape[0] if config.robot_state_feature else 0
        self._queue: deque[Tensor] = deque()
        self._rank_rng_offset = False
        self._ema: list[Tensor] | None = None
        self._ema_updates = 0

    @classmethod
    def from_pretrained(cls, pretrained_name_or_path: str | Path, *args: Any, **kwargs: Any) -> VLAPolicy:  # type: ignore[override]
        kwargs["strict"] = True
        token = _loading_checkpoint.set(True)
        try:
            return super().from_pretrained(pretrained_name_or_path, *args, **kwargs)  # type: ignore[return-value]
        finally:
            _loading_checkpoint.reset(token)

    @classmethod
    def load_for_inference(cls, path: str | Path, device: str = "cpu", dtype: str | None = None,
                           compile: bool = False) -> tuple[VLAPolicy, Any, Any]:  # fmt: skip
        """A checkpoint in eval mode on `device`, with the pre- and postprocessors saved beside it; `dtype` and
        `compile` override the checkpoint's inference settings (see `set_inference`)."""
        from lerobot.policies import make_pre_post_processors

        import lerobot_policy_vla  # noqa: F401  (registers the policy type and processor steps)

        try:
            adapter = (Path(path) / "adapter_config.json").is_file()
            policy = cls.from_adapter(path) if adapter else cls.from_pretrained(path)
        except Exception as err:  # missing, truncated or foreign files (safetensors, json, LeRobot errors)
            detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"cannot load the policy checkpoint {path}: {detail}") from err
        policy.config.device = device
        policy.to(device).eval()
        policy.set_inference(dtype, compile)
        overrides = {"device_processor": {"device": device}}
        pre, post = make_pre_post_processors(policy.config, pretrained_path=str(path),
                                             preprocessor_overrides=overrides)  # fmt: skip
        return policy, pre, post

    @classmethod
    def from_adapter(cls, path: str | Path) -> VLAPolicy:
        """A checkpoint of LoRA / PEFT fine-tuning (`--peft.*`: adapter weights, plus the path of the policy they
        adapt) as a plain policy with the adapters merged into its weights: no adapter overhead per call, and the
        fused inference path sees the adapted weights."""
        from peft import PeftConfig, PeftModel

        base_path = PeftConfig.from_pretrained(str(path)).base_model_name_or_path
        if not base_path or not Path(base_path).is_dir():
            raise FileNotFoundError(f"{path} holds LoRA adapters for the policy at {base_path!r}, which is not a "
                                    "directory here; copy the base checkpoint there or edit adapter_config.json")
        merged = PeftModel.from_pretrained(cls.from_pretrained(base_path), str(path)).merge_and_unload()
        assert isinstance(merged, VLAPolicy)
        merged.config.use_peft = False
        return merged

    def set_inference(self, dtype: str | None = None, compile: bool = False) -> None:
        """Switch a built policy's inference precision (`float32`, `bfloat16`, `int8`) or turn `compile` on."""
        if dtype is not None:
            if dtype not in DTYPES:
                raise ValueError(f"dtype {dtype!r} is not one of {DTYPES}")
            self.config.dtype = dtype
            self.model.use_int8(dtype == "int8")
        if compile and not self.config.compile:
            self.config.compile = True
            self.model.compile_layers()

    # ------------------------------------------------------------------ LeRobot interface
    def reset(self) -> None:
        self._queue.clear()

    def update(self) -> None:
        """LeRobot's training loop calls this after every optimiser step: move the weights' moving average
        (`ema_decay`), which the checkpoint saves in place of the raw weights."""
        if self.config.ema_decay <= 0:
            return
        params = [p.detach() for p in self.parameters() if p.requires_grad]
        if self._ema is None or len(self._ema) != len(params):
            self._ema, self._ema_updates = [p.clone() for p in params], 0
        self._ema_updates += 1
        decay = min(self.config.ema_decay, (1 + self._ema_updates) / (10 + self._ema_updates))
        torch._foreach_lerp_(self._ema, params, 1.0 - decay)

    @contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """Within the block the trained parameters hold their moving average (when one is kept)."""
        if self._ema is None:
            yield
            return
        params = [p for p in self.parameters() if p.requires_grad]
        with torch.no_grad():
            raw = [p.detach().clone() for p in params]
            torch._foreach_copy_(params, self._ema)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, raw)

    def _save_pretrained(self, save_directory: Path, state_dict: dict[str, Tensor] | None = None) -> None:
        with self.averaged_weights():
            super()._save_pretrained(save_directory, state_dict=state_dict)

    def get_optim_params(self) -> list[torch.nn.Parameter]:  # type: ignore[override]
        return [p for p in self.parameters() if p.requires_grad]

    def _get_default_peft_targets(self) -> dict[str, Any]:
        """What `--peft.*` adapts by default: LoRA on the action expert's attention and MLP projections; the small
        projections in and out of the expert train whole (PEFT's `modules_to_save`). The VLM stays frozen, so its
        fused, cached prefix path is unchanged. `--peft.target_modules` / `--peft.full_training_modules` override."""
        return {
            "target_modules": r".*expert\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)",
            "modules_to_save": ["state_proj", "action_in_proj", "action_time_mlp_in", "action_time_mlp_out",
                                "action_out_proj"],
        }

    def forward(self, batch: dict[str, Tensor], reduction: str = "mean") -> tuple[Tensor, dict[str, Any]]:
        """Flow-matching loss; `reduction="none"` gives one loss per sample (B,)."""
        obs = self.observation(batch)
        actions = batch[ACTION]
        if actions.shape[-1] != self.action_dim:
            raise ValueError(f"action has dimension {actions.shape[-1]}; this policy was built for {self.action_dim}")
        if ACTION_IS_PAD not in batch:
            raise KeyError(f"the batch has no '{ACTION_IS_PAD}'; load data with the policy's delta_timestamps")
        if self.training and not self._rank_rng_offset:
            self._rank_rng_offset = offset_rng_per_rank()
        fast = self.fast.encode(actions) if self.fast is not None and self.training else None
        with self._autocast():
            parts = self.model.losses(obs, actions, batch[ACTION_IS_PAD], per_sample=reduction == "none", fast=fast)
        if "fast" not in parts:
            return parts["flow"], {}
        return self.model.total_loss(parts), {f"{k}_loss": parts[k].mean().item() for k in ("flow", "fast")}

    def supports_rtc(self) -> bool:
        """LeRobot's real-time chunking contract (`lerobot-rollout --inference.type=rtc`): see predict_action_chunk."""
        return True

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], noise: Tensor | None = None,
                             inference_delay: int | None = None, prev_chunk_left_over: Tensor | None = None,
                             rtc_mode: str | None = None) -> Tensor:  # fmt: skip
        """(B, chunk_size, action_dim) normalised actions (the postprocessor unnormalises them).

        Real-time chunking: `prev_chunk_left_over` ((T, A) or (B, T, A), normalised, as the preprocessor or
        LeRobot's RTC engine gives it) is what the previous chunk still plans, starting with the `inference_delay`
        actions that execute while this chunk is computed. The new chunk continues it, by `rtc_mode` (default the
        config's `rtc_mode`): "guidance" inpaints it with the true vector-Jacobian product through the expert
        (`vla.model.rtc.sample_guided`), "training" gives the committed actions as clean tokens to a policy trained
        with `rtc_max_delay` >= the delay (no backward pass; beyond that delay it falls back to guidance), "off"
        ignores it. Rows of exact zeros at the end of the left-over are padding (LeRobot pads it to its execution
        horizon) and are not followed.
        """
        obs = self.observation(batch)
        mode = rtc_mode or self.config.rtc_mode
        if prev_chunk_left_over is None or mode == "off" or prev_chunk_left_over.numel() == 0:
            with self._autocast():
                samples = self.config.action_samples if noise is None else 1
                actions = self.model.sample_actions(obs, noise=noise, samples=samples)
            return actions[..., : self.action_dim].float()
        prefix, n = self._rtc_prefix(prev_chunk_left_over, obs.batch_size)
        delay = min(max(int(inference_delay or 0), 0), n)
        with self._autocast():
            if mode == "training" and self.config.rtc_max_delay > 0 and delay <= self.config.rtc_max_delay:
                actions = rtc.sample_with_prefix(self.model, obs, prefix, delay, noise=noise)
            else:
                actions = rtc.sample_guided(self.model, obs, prefix, delay, overlap=n, beta=self.config.rtc_beta,
                                            noise=noise)  # fmt: skip
        return actions[..., : self.action_dim].float()

    def _rtc_prefix(self, left_over: Tensor, batch_size: int) -> tuple[Tensor, int]:
        """The left-over plan as (B, chunk_size, max_action_dim) in the model's space, and its length without
        trailing all-zero padding rows."""
        cfg = self.model.cfg
        prefix = left_over[None] if left_over.ndim == 2 else left_over
        if prefix.shape[-1] != self.action_dim:
            raise ValueError(f"prev_chunk_left_over has action dimension {prefix.shape[-1]}; this policy was built "
                             f"for {self.action_dim}")
        real = prefix.detach().abs().amax(dim=(0, 2)).ne(0).nonzero()
        n = min(int(real[-1]) + 1 if len(real) else 0, cfg.chunk_size)
        padded = torch.zeros(batch_size, cfg.chunk_size, cfg.max_action_dim, device=prefix.device)
        padded[:, :n, : self.action_dim] = prefix[:, :n].float()
        return padded, n

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor], **kwargs: Any) -> Tensor:
        """One action (B, action_dim), from a queue refilled with `n_action_steps` of each new chunk."""
        if not self._queue:
            chunk = self.predict_action_chunk(batch, **kwargs)[:, : self.config.n_action_steps]
            self._queue.extend(chunk.transpose(0, 1))
        return self._queue.popleft()

    # ------------------------------------------------------------------ batch -> Observation
    def observation(self, batch: dict[str, Tensor]) -> Observation:
        cameras = [k for k in batch if is_camera_key(k)]
        unknown = sorted(set(cameras) - set(self.camera_keys))
        if unknown:
            raise ValueError(f"camera(s) {unknown} are not known to this policy, which expects {self.camera_keys}; "
                             "rename them (e.g. --rename_map) or train with these cameras")
        present = [k for k in self.camera_keys if k in batch]
        if not present:
            raise ValueError(f"the batch has none of the policy's cameras {self.camera_keys}; it has {sorted(batch)}")
        ref = batch[present[0]]
        b, dev = ref.shape[0], ref.device
        images, masks = [], []
        for key in self.camera_keys:
            if key in batch:
                image = batch[key]
                image = image[:, -1] if image.ndim == 5 else image
                expected = tuple(self.config.image_features[key].shape)
                if image.ndim != 4 or image.shape[1] != expected[0]:
                    raise ValueError(f"{key} has shape {tuple(image.shape)}; expected (batch, {expected[0]}, H, W)")
                # uint8 frames (the frame cache's compact transport, or raw camera images) are scaled here,
                # on the policy's device; float frames are in [0, 1] already
                images.append(image.float().div_(255) if image.dtype == torch.uint8 else image.float())
                masks.append(torch.ones(b, dtype=torch.bool, device=dev))
            else:
                images.append(torch.zeros(b, *self.config.image_features[key].shape, device=dev))
                masks.append(torch.zeros(b, dtype=torch.bool, device=dev))
        if self.state_dim:
            state = batch[OBS_STATE]
            state = state[:, -1] if state.ndim == 3 else state
            if state.shape[-1] != self.state_dim:
                raise ValueError(f"{OBS_STATE} has dimension {state.shape[-1]}; this policy was built for "
                                 f"{self.state_dim} (from its dataset's features)")
        else:
            state = torch.zeros(b, 0, device=dev)
        if OBS_LANGUAGE_TOKENS not in batch:
            raise KeyError(f"the batch has no '{OBS_LANGUAGE_TOKENS}': pass it through the policy's preprocessor")
        tokens, token_mask = batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK].bool()
        if self.config.compile:
            tokens, token_mask = pad_tokens(tokens, token_mask, TOKEN_BUCKET)
        return Observation(images=images, image_masks=torch.stack(masks, dim=1), state=state.float(),
                           tokens=tokens, token_mask=token_mask)

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.config.dtype != "bfloat16":
            return nullcontext()
        device = next(self.parameters()).device.type
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
