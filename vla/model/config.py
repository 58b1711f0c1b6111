"""Model configuration: one frozen dataclass per model, presets, and the derived sizes computed in one place.

`VLAModelConfig` knows nothing about LeRobot. It describes the backbone (a SmolVLM / Idefics3-family VLM:
SigLIP-style vision tower, pixel-shuffle connector, Llama-style text model truncated to `num_vlm_layers`), the
action expert, and flow-matching sampling. `create()` builds the network, `fake_obs(batch)` builds inputs, so a
test gets any preset running in one line:

    cfg = PRESETS["tiny"]; model = cfg.create(); actions = model.sample_actions(cfg.fake_obs(2))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vla.model.observation import Observation
    from vla.model.vla import VLAModel


VISION_KINDS = ("siglip", "conv")


@dataclass(frozen=True)
class VisionConfig:
    """`kind` "siglip": a SigLIP-shaped ViT (the SmolVLM tower; pretrained weights load into it). "conv": the
    convolutional tokenizer of `vla.model.conv_vision` for training from scratch (`hidden_size` its last
    stage's channels, `num_layers` residual blocks per stage, `patch_size` its total stride)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    image_size: int
    patch_size: int
    kind: str = "siglip"


@dataclass(frozen=True)
class TextConfig:
    hidden_size: int
    num_layers: int  # layers of the full text model; the VLA keeps the first `num_vlm_layers`
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    rope_theta: float = 100_000.0
    rms_norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def expert_intermediate_size(hidden: int, ffn_multiplier: int = 4, multiple_of: int = 256) -> int:
    """SwiGLU width for a given hidden size: 2/3 of 4x, rounded up to a multiple of 256 (the Llama rule)."""
    width = ffn_multiplier * int(2 * hidden / 3)
    return multiple_of * ((width + multiple_of - 1) // multiple_of)


@dataclass(frozen=True)
class VLAModelConfig:
    vision: VisionConfig
    text: TextConfig
    scale_factor: int = 2  # pixel shuffle: (image_size / patch_size / scale_factor)**2 tokens per camera
    num_vlm_layers: int = 16
    expert_width_multiplier: float = 0.75
    self_attn_every_n_layers: int = 2  # layer i of the expert self-attends iff i % n == 0, else cross-attends
    chunk_size: int = 50
    num_steps: int = 10
    max_state_dim: int = 32
    max_action_dim: int = 32
    tokenizer_max_length: int = 48
    min_period: float = 4e-3  # sinusoidal flow-time embedding
    max_period: float = 4.0
    freeze_vlm: bool = True  # vision tower, connector and text layers; the expert and projections always train
    rtc_max_delay: int = 0  # training-time real-time chunking: up to this many leading actions given clean
    augment_shift: int = 0  # training: shift each camera image by up to this many pixels (at the model's input size)
    # training: Gaussian noise of this standard deviation on the normalised state. With every episode starting from
    # the same pose, the hand's first few centimetres of travel tell a policy where the goal is, so it can learn to
    # continue its own path instead of looking; noise hides that path. (Meta-World, docs/learning.md: at 0.5 the six
    # tasks' policy still did not look; at 3.0 a reach-only policy did, the six tasks' did not; reach alone
    # learned as well without it. Off in every preset.)
    state_noise: float = 0.0
    # training: noise and flow-time draws per observation; the prefix (cameras, words, state: most of a step's
    # compute) is computed once and shared by its draws, so the expert sees more targets for little more compute
    flow_samples: int = 1
    # FAST action tokens (`vla.model.fast`) as an auxiliary loss: the VLM predicts the chunk's tokens one by one
    # after the state token, cross-entropy weighted by `fast_loss_weight`; 0 tokens = off. `fast_insulate`
    # (pi0.5's knowledge insulation): the expert reads the VLM's keys and values without passing its gradient back.
    fast_vocab_size: int = 0
    fast_loss_weight: float = 1.0
    fast_insulate: bool = False

    # ---- derived sizes, computed here only ----
    @property
    def vlm_width(self) -> int:
        return self.text.hidden_size

    @property
    def expert_width(self) -> int:
        return int(self.text.hidden_size * self.expert_width_multiplier)

    @property
    def expert_intermediate(self) -> int:
        return expert_intermediate_size(self.expert_width)

    @property
    def tokens_per_image(self) -> int:
        side = self.vision.image_size // self.vision.patch_size
        return side**2 if self.vision.kind == "conv" else (side // self.scale_factor) ** 2

    def is_self_attn_layer(self, layer: int) -> bool:
        return layer % self.self_attn_every_n_layers == 0

    def replace(self, **changes: Any) -> VLAModelConfig:
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        if self.vision.kind not in VISION_KINDS:
            raise ValueError(f"vision kind {self.vision.kind!r} is not one of {VISION_KINDS}")
        side = self.vision.image_size // self.vision.patch_size
        shuffle = 1 if self.vision.kind == "conv" else self.scale_factor
        if self.vision.image_size % self.vision.patch_size or side % shuffle:
            raise ValueError(
                f"image_size {self.vision.image_size} must be a multiple of patch_size {self.vision.patch_size} "
                f"times scale_factor {self.scale_factor}"
            )
        if self.augment_shift < 0:
            raise ValueError(f"augment_shift={self.augment_shift} must be >= 0")
        if self.state_noise < 0:
            raise ValueError(f"state_noise={self.state_noise} must be >= 0")
        if self.fast_vocab_size and self.freeze_vlm:
            raise ValueError("FAST action tokens train the VLM: they need freeze_vlm=False")
        if self.fast_vocab_size < 0 or self.fast_loss_weight < 0:
            raise ValueError("fast_vocab_size and fast_loss_weight must be >= 0")
        if self.flow_samples < 1:
            raise ValueError(f"flow_samples={self.flow_samples} must be >= 1")
        if not 0 <= self.rtc_max_delay < self.chunk_size:
            raise ValueError(f"rtc_max_delay={self.rtc_max_delay} must be in [0, chunk_size={self.chunk_size})")
        if not 1 <= self.num_vlm_layers <= self.text.num_layers:
            raise ValueError(f"num_vlm_layers={self.num_vlm_layers} must be in [1, {self.text.num_layers}]")
        if self.text.hidden_size % self.text.num_heads or self.text.num_heads % self.text.num_kv_heads:
            raise ValueError("text hidden_size must divide into heads, and heads into kv heads")

    # ---- factories ----
    def create(self) -> VLAModel:
        from vla.model.vla import VLAModel

        return VLAModel(self)

    def fake_obs(self, batch_size: int, num_cameras: int = 1, seed: int = 0,
                 state_dim: int | None = None) -> Observation:
        from vla.model.observation import Observation

        return Observation.fake(self, batch_size, num_cameras=num_cameras, seed=seed, state_dim=state_dim)


# Vision tower sizes follow SigLIP; text sizes follow SmolLM2. `smolvla` is the shape of SmolVLM2-500M as used by
# SmolVLA (16 of 32 text layers, expert 0.75x, chunk 50, 10 Euler steps).
PRESETS: dict[str, VLAModelConfig] = {
    "tiny": VLAModelConfig(
        vision=VisionConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, image_size=32,
                            patch_size=8),
        text=TextConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
                        vocab_size=262),
        scale_factor=2, num_vlm_layers=2, chunk_size=10, num_steps=4, max_state_dim=8, max_action_dim=8,
        tokenizer_max_length=24,
    ),
    # Trains from scratch on a CPU in minutes: a convolutional tokenizer at the SO-101 cameras' 96 px (6x6 tokens
    # a camera, so a cube spans several pixels of one token), random-shift augmentation, a narrow 4-layer VLM.
    # 5 Euler steps: on two pick-color checkpoints as good as 10 (389/500 against 369/500 paired episodes,
    # docs/learning.md) at half the denoising time.
    "cpu": VLAModelConfig(
        vision=VisionConfig(hidden_size=128, num_layers=1, num_heads=1, intermediate_size=0, image_size=96,
                            patch_size=16, kind="conv"),
        text=TextConfig(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=384,
                        vocab_size=262),
        scale_factor=1, num_vlm_layers=4, chunk_size=16, num_steps=5, max_state_dim=8, max_action_dim=8,
        tokenizer_max_length=24, augment_shift=4,
    ),
    "small": VLAModelConfig(
        vision=VisionConfig(hidden_size=192, num_layers=4, num_heads=3, intermediate_size=768, image_size=128,
                            patch_size=16),
        text=TextConfig(hidden_size=384, num_layers=8, num_heads=6, num_kv_heads=2, intermediate_size=1024,
                        vocab_size=262),
        scale_factor=2, num_vlm_layers=8, chunk_size=50, num_steps=10, max_state_dim=32, max_action_dim=32,
    ),
    "smolvla": VLAModelConfig(
        vision=VisionConfig(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, image_size=512,
                            patch_size=16),
        text=TextConfig(hidden_size=960, num_layers=32, num_heads=15, num_kv_heads=5, intermediate_size=2560,
                        vocab_size=49280),
        scale_factor=4, num_vlm_layers=16, chunk_size=50, num_steps=10, max_state_dim=32, max_action_dim=32,
    ),
}
