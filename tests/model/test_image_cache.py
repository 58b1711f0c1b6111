"""Frozen-tower camera embeddings kept across training steps (`vla.model.image_cache`)."""

from __future__ import annotations

import pytest
import torch

from vla.model import PRESETS, VLAModel
from vla.model.image_cache import ImageEmbeddingCache
from vla.model.observation import Observation

TINY = PRESETS["tiny"].replace(num_vlm_layers=2)


def embed_rows(images: list[torch.Tensor]) -> torch.Tensor:
    """A stand-in embedding: (n, 2, 3) from each image's mean, max and sum, camera-major."""
    rows = [im.flatten(1) for im in images if len(im)]
    stats = torch.cat([torch.stack([r.mean(1), r.amax(1), r.sum(1)], dim=-1) for r in rows])
    return stats[:, None].expand(-1, 2, -1).clone()


def counting(calls: list[int]):  # type: ignore[no-untyped-def]
    def compute(images: list[torch.Tensor]) -> torch.Tensor:
        calls.append(sum(len(im) for im in images))
        return embed_rows(images)
    return compute


def test_partial_hits_duplicates_and_camera_order() -> None:
    cache, calls = ImageEmbeddingCache(1 << 20), []
    a = torch.rand(3, 3, 8, 8)
    b = torch.rand(3, 3, 4, 6)  # a second camera at another resolution
    first = cache.embed([a, b], counting(calls), token=0)
    assert torch.equal(first, embed_rows([a, b]))
    assert calls == [6] and len(cache) == 6
    # rows 0 and 2 of camera a seen before, row 1 new; camera b: one seen, one new, the new one twice
    a2 = torch.stack([a[0], torch.rand(3, 8, 8), a[2]])
    fresh = torch.rand(3, 4, 6)
    b2 = torch.stack([fresh, b[1], fresh])
    second = cache.embed([a2, b2], counting(calls), token=0)
    assert torch.equal(second, embed_rows([a2, b2]))
    assert calls == [6, 3]  # only the unseen images (the duplicate computed with its twin, in one call)
    assert (cache.hits, cache.misses) == (3, 9) and len(cache) == 8
    third = cache.embed([a2, b2], counting(calls), token=0)
    assert torch.equal(third, second) and calls == [6, 3]


def test_token_change_empties_it() -> None:
    cache, calls = ImageEmbeddingCache(1 << 20), []
    images = [torch.rand(2, 3, 8, 8)]
    cache.embed(images, counting(calls), token="weights v1")
    cache.embed(images, counting(calls), token="weights v1")
    cache.embed(images, counting(calls), token="weights v2")
    assert calls == [2, 2]


def test_least_recently_used_out_first_within_budget() -> None:
    entry = 2 * 3 * 4  # bytes of one (2, 3) float32 embedding
    cache, calls = ImageEmbeddingCache(2 * entry), []
    x, y, z = (torch.rand(1, 3, 8, 8) for _ in range(3))
    for images in ([x], [y], [x], [z]):  # x used again after y, so y goes when z arrives
        cache.embed(images, counting(calls), token=0)
    assert cache.nbytes == 2 * entry and len(cache) == 2
    cache.embed([x], counting(calls), token=0)
    cache.embed([z], counting(calls), token=0)
    cache.embed([y], counting(calls), token=0)
    assert calls == [1, 1, 1, 1]  # x, y, z, then y again after its eviction
    with pytest.raises(ValueError, match="positive size"):
        ImageEmbeddingCache(0)


def frozen_model(cache_bytes: int | None) -> VLAModel:
    torch.manual_seed(0)
    model = TINY.replace(freeze_vlm=True).create().train()
    if cache_bytes is not None:
        model.image_cache = ImageEmbeddingCache(cache_bytes)
    return model


def loss(model: VLAModel, obs: Observation, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    actions = torch.randn(obs.batch_size, TINY.chunk_size, 4, generator=g)
    noise = torch.randn(obs.batch_size, TINY.chunk_size, TINY.max_action_dim, generator=g)
    time = torch.rand(obs.batch_size, generator=g)
    pad = torch.zeros(obs.batch_size, TINY.chunk_size, dtype=torch.bool)
    return model.compute_loss(obs, actions, pad, noise=noise, time=time)


def test_training_with_the_cache_equals_training_without() -> None:
    plain, cached = frozen_model(None), frozen_model(64 << 20)
    opts = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3) for m in (plain, cached)]
    obs = TINY.fake_obs(3, num_cameras=2)
    for step in range(3):
        losses = []
        for model, opt in zip((plain, cached), opts, strict=True):
            value = loss(model, obs, step)
            value.backward()
            opt.step()
            opt.zero_grad()
            losses.append(value.item())
        assert losses[0] == losses[1]
    assert cached.image_cache is not None
    assert (cached.image_cache.hits, cached.image_cache.misses) == (12, 6)
    # a vision weight changed in place (a checkpoint loaded into the model): nothing stale is served
    with torch.no_grad():
        for model in (plain, cached):
            next(model.backbone.vision.parameters()).add_(0.5)
    assert loss(plain, obs, 9).item() == loss(cached, obs, 9).item()
    assert cached.image_cache.misses == 12


def test_unused_when_the_tower_trains_or_in_eval() -> None:
    obs = TINY.fake_obs(2)
    model = frozen_model(1 << 20)
    model.backbone.vision.requires_grad_(True)
    loss(model, obs, 0)
    model.backbone.vision.requires_grad_(False)
    model.eval()
    with torch.no_grad():
        model.sample_actions(obs, num_steps=2)
    assert model.image_cache is not None and model.image_cache.misses == 0 and len(model.image_cache) == 0


def test_warns_once_when_no_frame_ever_repeats(monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    monkeypatch.setattr("vla.model.image_cache.NEVER_REPEATED", 6)
    cache = ImageEmbeddingCache(1 << 20)
    with caplog.at_level("WARNING", logger="vla.model.image_cache"):
        for _ in range(4):  # augmented frames: new pixels every time
            cache.embed([torch.rand(2, 3, 4, 4)], embed_rows, token=0)
    assert [r.message for r in caplog.records if "none seen twice" in r.message] == [
        "image embedding cache: 6 training images, none seen twice (random image augmentation makes every frame "
        "new); --policy.image_cache_mb=0 turns the cache off"]
