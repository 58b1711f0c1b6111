"""`--policy.type=vla`: the LeRobot configuration of our VLA policy.

The network's sizes come from a preset of `vla.model.PRESETS` or, with `vlm_path`, from that VLM's own
transformers config. The per-run fields (chunk, steps, padding sizes, token length, vision stem, augmentation)
default to None, which means the preset's value: a preset's values stand unless a flag overrides them, and
`__post_init__` writes the resolved values back, so a saved config.json holds what was used.
`model_config()` is the one place that builds the network's config from them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from lerobot.configs import FeatureType, NormalizationMode, PreTrainedConfig
from lerobot.optim import AdamWConfig, CosineDecayWithWarmupSchedulerConfig, LRSchedulerConfig
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from vla.model.config import PRESETS, VISION_KINDS, VLAModelConfig
from vla.model.fast import FastTokenizer
from vla.policies.tokenizer import TOKENIZERS, WordTokenizer, build_vocabulary, default_kind

DTYPES = ("float32", "bfloat16", "int8")
PRESET_FIELDS = ("chunk_size", "num_steps", "max_state_dim", "max_action_dim", "tokenizer_max_length",
                 "augment_shift", "flow_samples", "state_noise")
RTC_MODES = ("guidance", "training", "off")


@PreTrainedConfig.register_subclass("vla")
@dataclass
class VLAConfig(PreTrainedConfig):
    preset: str = "small"
    # A SmolVLM / Idefics3 directory or hub id. Sizes, tokenizer and (for a fresh policy) weights come from it.
    vlm_path: str | None = None
    load_vlm_weights: bool = True
    num_vlm_layers: int | None = None  # default: the preset's (16 for smolvla), capped at the VLM's depth
    # Train the expert and projections only. Default: frozen with pretrained VLM weights, trained when the
    # backbone starts from random weights (a frozen random backbone is a poor feature extractor).
    freeze_vlm: bool | None = None
    # "bfloat16": autocast the network (faster on GPUs and AMX CPUs). "int8": the matmuls no gradient passes
    # through (inference; the frozen VLM in training) in int8 with per-channel weight and per-token activation
    # scales (`vla.model.quant`; faster on CPUs without AMX, most with `compile`); the rest in float32.
    dtype: str = "float32"
    # torch.compile the eval-mode fast path (vision tower, prefix layers, denoising step) and the training
    # denoising step with its backward. The first chunk or training step of each input shape then takes a compile
    # (8-30 s on a 2-core CPU); later ones are faster.
    compile: bool = False
    # Opt-in: make glibc's malloc reuse freed memory instead of returning it to the kernel (process-wide; see
    # `vla.allocator`): large tensors then stop page-faulting on every allocation, but the process keeps its peak
    # heap. Off by default, since it changes the whole process, not just the policy; the benchmarks measure both.
    keep_freed_memory: bool = False
    # Keep each training frame's camera embedding while the vision tower is frozen, so later epochs skip the
    # tower (`vla.model.image_cache`): up to this many MiB of CPU memory, least recently used out first; 0 = off.
    # Frames under random image augmentation never repeat and only pass through.
    image_cache_mb: int = 2048

    n_obs_steps: int = 1
    # None: the preset's value (see the module docstring); n_action_steps defaults to the chunk size.
    chunk_size: int | None = None
    n_action_steps: int | None = None
    num_steps: int | None = None
    max_state_dim: int | None = None
    max_action_dim: int | None = None
    tokenizer_max_length: int | None = None  # an instruction longer than this is an error, never cut
    # "siglip" (the SmolVLM-shaped ViT) or "conv" (a convolutional tokenizer that learns from scratch on small
    # data, `vla.model.conv_vision`); None: the preset's.
    vision: str | None = None
    augment_shift: int | None = None  # random image shift in training, pixels; None: the preset's
    state_noise: float | None = None  # Gaussian noise on the normalised state in training (std); None: the preset's
    flow_samples: int | None = None  # noise draws per observation in training (sharing its prefix); None: preset's
    # "vlm" (the VLM's own; with vlm_path), "words" (a vocabulary of the training dataset's instructions), "bytes".
    # None: "vlm" with vlm_path, else "words" when the policy is built from a dataset, else "bytes".
    tokenizer: str | None = None
    vocabulary: list[str] | None = None  # the "words" tokenizer's; filled from the dataset's tasks
    # Training-time real-time chunking: each sample's first d ~ U{0..rtc_max_delay} actions are given clean and
    # left out of the loss, so deployment can condition a chunk on the actions executing meanwhile (no backward
    # pass). Set it to the inference delay in control ticks you expect (e.g. 200 ms at 30 Hz -> 6, with margin).
    rtc_max_delay: int = 0
    # How a chunk continues the previous one's left-over actions at deployment (predict_action_chunk with
    # `prev_chunk_left_over`, as `lerobot-rollout --inference.type=rtc` and `vla deploy` call it): "guidance"
    # (inference-time inpainting, any checkpoint), "training" (needs rtc_max_delay >= the delay), "off".
    rtc_mode: str = "guidance"
    rtc_beta: float = 5.0  # the guidance weight's clip (RTC paper's beta)
    # Chunks sampled per inference (each from its own noise, over one prefix) and averaged; 1 = one sample. Not with
    # a real-time-chunking prefix, which continues one sample. On `stack` 4 lifted 147/200 to 169/200 (learning.md).
    action_samples: int = 1

    # Keep an exponential moving average of the trained weights (updated after every optimiser step) and save it
    # as the checkpoint's weights; 0 = off. The decay warms up as min(ema_decay, (1 + n) / (10 + n)) at update n.
    # A resumed run continues from the saved (averaged) weights.
    ema_decay: float = 0.0

    # FAST action tokens (pi0-FAST: DCT + byte-pair encoding, `vla.model.fast`) predicted by the VLM after the
    # state token, as an auxiliary cross-entropy with this weight beside flow matching; 0 = off. The BPE is fitted
    # on the training dataset's normalised action chunks when the policy is built and saved in `fast_tokenizer`.
    fast_loss_weight: float = 0.0
    fast_vocab_size: int = 512  # BPE vocabulary (more than the 255 single coefficient values)
    fast_scale: float = 10.0  # DCT coefficients are multiplied by this before rounding
    fast_insulate: bool = False  # pi0.5's knowledge insulation: the expert's gradient does not reach the VLM
    fast_tokenizer: str | None = None  # the fitted BPE (the `tokenizers` library's JSON)

    normalization_mapping: dict[str, NormalizationMode] = field(
        default_factory=lambda: {
            "VISUAL": NormalizationMode.IDENTITY,
            "STATE": NormalizationMode.MEAN_STD,
            "ACTION": NormalizationMode.MEAN_STD,
        }
    )

    # SmolVLA's published recipe.
    optimizer_lr: float = 1e-4
    optimizer_betas: tuple[float, float] = (0.9, 0.95)
    optimizer_eps: float = 1e-8
    optimizer_weight_decay: float = 1e-10
    optimizer_grad_clip_norm: float = 10.0
    scheduler_warmup_steps: int = 1_000
    scheduler_decay_steps: int = 30_000
    scheduler_decay_lr: float = 2.5e-6
    # LeRobot's cosine shrinks itself to a run shorter than scheduler_decay_steps (so it always ends at decay_lr);
    # false keeps the cosine as planned, and a shorter run ends mid-decay: with weight EMA the better short run
    # (docs/learning.md).
    scheduler_scale_to_run: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preset not in PRESETS:
            raise ValueError(f"--policy.preset={self.preset!r} is not one of {sorted(PRESETS)}")
        preset = PRESETS[self.preset]
        for name in PRESET_FIELDS:
            if getattr(self, name) is None:
                setattr(self, name, getattr(preset, name))
        if self.vision is None:
            self.vision = preset.vision.kind
        if self.n_action_steps is None:
            self.n_action_steps = self.chunk_size
        if self.vision not in VISION_KINDS:
            raise ValueError(f"--policy.vision={self.vision!r} is not one of {VISION_KINDS}")
        if self.tokenizer is not None and self.tokenizer not in TOKENIZERS:
            raise ValueError(f"--policy.tokenizer={self.tokenizer!r} is not one of {TOKENIZERS}")
        if self.tokenizer == "vlm" and not self.vlm_path:
            raise ValueError("--policy.tokenizer=vlm needs --policy.vlm_path")
        if self.dtype not in DTYPES:
            raise ValueError(f"--policy.dtype={self.dtype!r} is not one of {DTYPES}")
        if self.rtc_mode not in RTC_MODES:
            raise ValueError(f"--policy.rtc_mode={self.rtc_mode!r} is not one of {RTC_MODES}")
        if self.action_samples < 1:
            raise ValueError(f"--policy.action_samples={self.action_samples} must be >= 1 (1 = one sample)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"--policy.ema_decay={self.ema_decay} must be in [0, 1) (0 = off)")
        if self.fast_loss_weight < 0:
            raise ValueError(f"--policy.fast_loss_weight={self.fast_loss_weight} must be >= 0 (0 = off)")
        if self.image_cache_mb < 0:
            raise ValueError(f"--policy.image_cache_mb={self.image_cache_mb} must be 0 (off) or a size in MiB")
        if not 1 <= self.n_action_steps <= self.chunk_size:  # type: ignore[operator]
            raise ValueError(
                f"n_action_steps={self.n_action_steps} must be between 1 and chunk_size={self.chunk_size}"
            )

    @property
    def tokenizer_kind(self) -> str:
        return self.tokenizer or default_kind(self.vlm_path)

    @property
    def max_tokens(self) -> int:
        assert self.tokenizer_max_length is not None  # __post_init__ resolved it
        return self.tokenizer_max_length

    def adopt_dataset_tasks(self, tasks: list[str]) -> None:
        """Choose the tokenizer for a policy built from a dataset: "words" over its instructions unless another was
        asked for (or a VLM brings its own); keep an existing vocabulary (a checkpoint's)."""
        if self.tokenizer is None and not self.vlm_path and tasks:
            self.tokenizer = "words"
        if self.tokenizer == "words" and self.vocabulary is None:
            self.vocabulary = build_vocabulary(tasks)

    def resolve_tokenizer(self) -> None:
        """Fix the tokenizer choice (saved with the config); "words" without a vocabulary is an error."""
        self.tokenizer = self.tokenizer_kind
        if self.tokenizer == "words" and not self.vocabulary:
            raise ValueError("--policy.tokenizer=words needs a vocabulary: build the policy from a dataset (its tasks "
                             "give the words) or pass --policy.vocabulary")

    def model_config(self) -> VLAModelConfig:
        cfg = PRESETS[self.preset]
        if self.vlm_path:
            from vla.model.backbone import read_pretrained_sizes

            cfg = read_pretrained_sizes(self.vlm_path, cfg)
            cfg = cfg.replace(num_vlm_layers=min(cfg.num_vlm_layers, cfg.text.num_layers))
        if self.num_vlm_layers is not None:
            cfg = cfg.replace(num_vlm_layers=self.num_vlm_layers)
        if self.vision is not None and self.vision != cfg.vision.kind:
            cfg = cfg.replace(vision=dataclasses.replace(cfg.vision, kind=self.vision))
        if self.tokenizer_kind == "words":
            vocab_size = WordTokenizer(self.vocabulary or []).vocab_size
            cfg = cfg.replace(text=dataclasses.replace(cfg.text, vocab_size=vocab_size))
        return cfg.replace(
            chunk_size=self.chunk_size, num_steps=self.num_steps, max_state_dim=self.max_state_dim,
            max_action_dim=self.max_action_dim, tokenizer_max_length=self.tokenizer_max_length,
            augment_shift=self.augment_shift, flow_samples=self.flow_samples, state_noise=self.state_noise,
            freeze_vlm=self.vlm_frozen,
            rtc_max_delay=self.rtc_max_delay, fast_vocab_size=self.fast_tokens().vocab_size if self.fast_on else 0,
            fast_loss_weight=self.fast_loss_weight, fast_insulate=self.fast_insulate,
        )

    @property
    def fast_on(self) -> bool:
        return self.fast_loss_weight > 0

    def fast_tokens(self) -> FastTokenizer:
        """The fitted FAST tokenizer (`fast_tokenizer`); an error before it is fitted."""
        if self.fast_tokenizer is None:
            raise ValueError("--policy.fast_loss_weight > 0 needs a FAST tokenizer fitted on action chunks: build "
                             "the policy from a dataset (lerobot-train / vla train do) or pass --policy.fast_tokenizer")
        return FastTokenizer(self.fast_tokenizer, self.fast_scale)

    @property
    def vlm_frozen(self) -> bool:
        if self.freeze_vlm is not None:
            return self.freeze_vlm
        return bool(self.vlm_path and self.load_vlm_weights)

    def validate_features(self) -> None:
        if not self.image_features:
            features = sorted(self.input_features or {})
            raise ValueError(f"the VLA needs at least one camera; input features are {features}")
        state = self.robot_state_feature
        if state is not None and state.shape[0] > self.max_state_dim:
            raise ValueError(f"state has dimension {state.shape[0]}, above --policy.max_state_dim={self.max_state_dim}")
        action = self.action_feature
        if action is None:
            raise ValueError("the dataset has no 'action' feature to learn")
        if action.shape[0] > self.max_action_dim:
            raise ValueError(
                f"action has dimension {action.shape[0]}, above --policy.max_action_dim={self.max_action_dim}"
            )
        for key, ft in self.image_features.items():
            if ft.type is not FeatureType.VISUAL or len(ft.shape) != 3:
                raise ValueError(f"camera {key} has shape {ft.shape}; expected (channels, height, width)")

    def get_optimizer_preset(self) -> AdamWConfig:
        return AdamWConfig(lr=self.optimizer_lr, betas=self.optimizer_betas, eps=self.optimizer_eps,
                           weight_decay=self.optimizer_weight_decay, grad_clip_norm=self.optimizer_grad_clip_norm)

    def get_scheduler_preset(self) -> CosineDecayWithWarmupSchedulerConfig:
        kind = CosineDecayWithWarmupSchedulerConfig if self.scheduler_scale_to_run else CosineAsPlannedSchedulerConfig
        return kind(
            peak_lr=self.optimizer_lr, decay_lr=self.scheduler_decay_lr,
            num_warmup_steps=self.scheduler_warmup_steps, num_decay_steps=self.scheduler_decay_steps,
        )

    @property
    def observation_delta_indices(self) -> None:
        return None

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.chunk_size or 0))

    @property
    def reward_delta_indices(self) -> None:
        return None


@LRSchedulerConfig.register_subclass("vla_cosine_as_planned")
@dataclass
class CosineAsPlannedSchedulerConfig(CosineDecayWithWarmupSchedulerConfig):
    """LeRobot's warm-up and cosine decay with its step counts as given, also in a run shorter than them."""

    def build(self, optimizer: Optimizer, num_training_steps: int) -> LambdaLR:
        # LeRobot's schedule, told the run is at least as long as the decay: then it does not shrink the decay
        return super().build(optimizer, max(num_training_steps, self.num_decay_steps))
