"""The convolutional image tokenizer (`vla.model.conv_vision`) and random-shift augmentation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vla.model import PRESETS
from vla.model.conv_vision import ConvVision, random_shift, stage_channels

CPU = PRESETS["cpu"]
TINY_CONV = PRESETS["tiny"].replace(vision=dataclasses.replace(PRESETS["tiny"].vision, kind="conv"), freeze_vlm=False)


def test_tokens_per_camera_follow_the_total_stride() -> None:
    assert stage_channels(CPU.vision) == [32, 64, 128]
    features = ConvVision(CPU.vision, CPU.text.hidden_size)(torch.rand(2, 3, 96, 96) * 2 - 1)
    assert features.shape == (2, 36, 128) == (2, CPU.tokens_per_image, CPU.vision.hidden_size)
    with pytest.raises(ValueError, match="power of two"):
        ConvVision(dataclasses.replace(CPU.vision, patch_size=12), 8)


def test_image_tokens_say_where_a_feature_is() -> None:
    """The same blob in two places gives different token sets, and each token knows its grid cell."""
    torch.manual_seed(0)
    model = TINY_CONV.create().eval()
    image = torch.zeros(1, 3, 32, 32)
    image[..., 2:8, 2:8] = 1.0
    moved = torch.roll(image, shifts=(16, 16), dims=(2, 3))
    a, b = model.embed_cameras([image]), model.embed_cameras([moved])
    assert a.shape == (1, TINY_CONV.tokens_per_image, TINY_CONV.text.hidden_size)
    assert not torch.allclose(a, b, atol=1e-3)
    blank = model.embed_cameras([torch.zeros(1, 3, 32, 32)])[0]
    assert not torch.allclose(blank[0], blank[-1], atol=1e-4)  # identical features, different cells


def test_a_conv_policy_trains_every_vision_weight() -> None:
    torch.manual_seed(0)
    model = TINY_CONV.create().train()
    obs = TINY_CONV.fake_obs(2, num_cameras=2, state_dim=4)
    model.compute_loss(obs, torch.randn(2, TINY_CONV.chunk_size, 4),
                       torch.zeros(2, TINY_CONV.chunk_size, dtype=torch.bool)).backward()
    for name, p in [*model.backbone.vision.named_parameters(), *model.backbone.connector.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_random_shift_moves_each_image_by_its_own_offset_within_the_pad() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.zeros(16, 1, 20, 20)
    images[:, :, 10, 10] = 1.0
    shifted = random_shift(images, 3, generator=g)
    assert shifted.shape == images.shape
    where = [tuple(int(i) for i in (im[0] == 1).nonzero()[0]) for im in shifted]
    assert all(abs(r - 10) <= 3 and abs(c - 10) <= 3 for r, c in where)
    assert len(set(where)) > 4  # offsets differ between images
    assert random_shift(images, 0) is images


def test_shift_applies_in_training_only() -> None:
    torch.manual_seed(0)
    cfg = TINY_CONV.replace(augment_shift=4)
    model = cfg.create()
    obs = cfg.fake_obs(1)
    model.eval()
    assert torch.equal(model.embed_cameras(obs.images), model.embed_cameras(obs.images))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model.embed_cameras(obs.images), model.embed_cameras(obs.images))


def test_state_noise_applies_in_training_only_and_to_the_state_only() -> None:
    """`state_noise` adds Gaussian noise of that deviation to the normalised state while training; evaluation and
    the zero padding up to `max_state_dim` see the clean values. The policy flag reaches the model."""
    from vla.policies.configuration_vla import VLAConfig

    torch.manual_seed(0)
    cfg = TINY_CONV.replace(state_noise=0.5)
    model = cfg.create()
    obs = cfg.fake_obs(256, state_dim=4)
    seen: list[torch.Tensor] = []
    model.state_proj.register_forward_hook(lambda _m, args, _out: seen.append(args[0].detach().clone()))
    with torch.no_grad():
        model.eval().embed_prefix(obs)
        model.train().embed_prefix(obs)
    clean, noisy = seen
    torch.testing.assert_close(clean[..., :4], obs.state)
    assert 0.45 < (noisy[..., :4] - obs.state).std().item() < 0.55
    assert torch.equal(noisy[..., 4:], clean[..., 4:]) and not clean[..., 4:].any()
    with pytest.raises(ValueError, match="state_noise"):
        cfg.replace(state_noise=-0.1).validate()
    assert VLAConfig(preset="cpu", state_noise=0.3).model_config().state_noise == 0.3
    assert VLAConfig(preset="cpu").model_config().state_noise == 0.0


def test_pretrained_weights_need_the_siglip_tower(tmp_path: object) -> None:
    from vla.model.backbone import Backbone

    with pytest.raises(ValueError, match="need the SigLIP tower"):
        Backbone.from_pretrained(str(tmp_path), CPU)


def test_the_instruction_conditions_the_image_tokens_through_film() -> None:
    """FiLM starts as the identity (zero weights); once trained, two instructions give the same image different
    tokens, and the model passes each sample's own instruction vector (padding excluded)."""
    torch.manual_seed(0)
    model = TINY_CONV.create().eval()
    image = torch.rand(2, 3, 32, 32)
    red, blue = torch.randn(1, TINY_CONV.text.hidden_size).expand(2, -1), torch.randn(2, TINY_CONV.text.hidden_size)
    plain = model.embed_cameras([image])
    torch.testing.assert_close(model.embed_cameras([image], red), plain)  # zero-initialised: identity
    with torch.no_grad():
        model.backbone.vision.film.weight.normal_(0, 0.1)
    a, b = model.embed_cameras([image], red), model.embed_cameras([image], blue)
    assert not torch.allclose(a, b, atol=1e-3) and not torch.allclose(a, plain, atol=1e-3)

    tokens = torch.tensor([[1, 5, 6, 2, 0, 0], [1, 5, 6, 2, 7, 7]])
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    vector = model.instruction_vector(model.backbone.embed_tokens(tokens), mask)
    assert vector is not None
    torch.testing.assert_close(vector[0], model.backbone.embed_tokens(tokens[0, :4]).mean(0))
    torch.testing.assert_close(vector[1], model.backbone.embed_tokens(tokens[1]).mean(0))
