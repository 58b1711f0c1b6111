"""The network: shapes, cache equivalence, masking, gradients, and that it can learn."""

from __future__ import annotations

import pytest
import torch

from vla.model import PRESETS, Observation, VLAModel, VLAModelConfig
from vla.model.flow import loss_mask, noisy_actions, sample_time

TINY = PRESETS["tiny"]


def make(cfg: VLAModelConfig = TINY, seed: int = 0) -> VLAModel:
    torch.manual_seed(seed)
    return cfg.create().eval()


def hard_obs(cfg: VLAModelConfig, batch: int = 3) -> Observation:
    """Two cameras of different sizes, one missing in sample 1, padded language, a short state."""
    obs = cfg.fake_obs(batch, num_cameras=2, seed=1)
    obs.images[1] = torch.rand(batch, 3, 20, 28)
    obs.image_masks[1, 0] = False
    obs.state = obs.state[:, :3]
    return obs


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_sample_shapes(preset: str) -> None:
    cfg = PRESETS[preset]
    model = make(cfg)
    actions = model.sample_actions(cfg.fake_obs(2, num_cameras=2))
    assert actions.shape == (2, cfg.chunk_size, cfg.max_action_dim)
    assert torch.isfinite(actions).all()


def test_action_samples_average_draws_over_one_prefix() -> None:
    """`samples=3` is the mean of three chunks integrated from three noise draws, run as one batch over one
    prefix cache; the cache-free reference path agrees."""
    model = make()
    obs = hard_obs(TINY)
    noise = torch.randn(3, obs.batch_size, TINY.chunk_size, TINY.max_action_dim)
    with torch.no_grad():
        each = torch.stack([model.sample_actions(obs, noise=n) for n in noise])
        mean = model.sample_actions(obs, noise=noise, samples=3)
        uncached = model.sample_actions(obs, noise=noise, samples=3, use_cache=False)
        torch.manual_seed(5)
        drawn = model.sample_actions(obs, samples=3)
        torch.manual_seed(5)
        first = model.sample_actions(obs)
    torch.testing.assert_close(mean, each.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(uncached, mean, rtol=1e-4, atol=1e-5)  # the reference path, observations repeated
    assert (each[0] - each[1]).abs().max() > 1e-3  # the draws differ, so the mean is not any one of them
    assert (drawn - first).abs().max() > 1e-3  # without noise given: fresh draws, averaged
    with pytest.raises(ValueError, match="samples must be at least 1"):
        model.sample_actions(obs, samples=0)


def test_smolvla_shape_one_step() -> None:
    """The 450M-parameter SmolVLA shape builds and runs one denoising step on CPU."""
    cfg = PRESETS["smolvla"]
    model = make(cfg)
    assert model.cfg.tokens_per_image == 64
    obs = cfg.fake_obs(1)
    with torch.no_grad():
        cache = model.fill_cache(obs, cfg.chunk_size)
        v = model.denoise_step(torch.randn(1, cfg.chunk_size, cfg.max_action_dim), torch.ones(1), cache)
    assert v.shape == (1, cfg.chunk_size, cfg.max_action_dim)
    assert cache.keys[0].shape[2] == 64 + obs.tokens.shape[1] + 1  # image tokens, language, state


@pytest.mark.parametrize("freeze_vlm", [True, False])
def test_cached_sampling_equals_full_recompute(freeze_vlm: bool) -> None:
    cfg = TINY.replace(freeze_vlm=freeze_vlm, num_vlm_layers=2, self_attn_every_n_layers=2)
    model = make(cfg)
    obs = hard_obs(cfg)
    noise = torch.randn(3, cfg.chunk_size, cfg.max_action_dim)
    cached = model.sample_actions(obs, noise=noise.clone())
    full = model.sample_actions(obs, noise=noise.clone(), use_cache=False)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=0)
    # and the velocities themselves are not trivially equal across steps (the check has teeth)
    assert (cached - noise).abs().max() > 1e-2


def test_cache_is_independent_of_padding_content() -> None:
    """Masked tokens (padding, missing cameras) must not leak into the actions."""
    model = make()
    obs = hard_obs(TINY)
    noise = torch.randn(3, TINY.chunk_size, TINY.max_action_dim)
    ref = model.sample_actions(obs, noise=noise.clone())
    obs.tokens[0, ~obs.token_mask[0]] = 7  # change padded token ids
    obs.images[0][1] = torch.rand_like(obs.images[0][1])  # change the missing camera's pixels
    torch.testing.assert_close(model.sample_actions(obs, noise=noise.clone()), ref, atol=1e-6, rtol=0)
    obs.tokens[0, 0] = (obs.tokens[0, 0] + 1) % TINY.text.vocab_size  # a real token does matter
    assert not torch.allclose(model.sample_actions(obs, noise=noise.clone())[0], ref[0], atol=1e-6)


def test_per_token_time_matches_scalar_time() -> None:
    model = make()
    obs = TINY.fake_obs(2)
    cache = model.fill_cache(obs, TINY.chunk_size)
    x = torch.randn(2, TINY.chunk_size, TINY.max_action_dim)
    t = torch.tensor([0.3, 0.8])
    per_token = t[:, None].expand(2, TINY.chunk_size)
    torch.testing.assert_close(model.denoise_step(x, t, cache), model.denoise_step(x, per_token, cache))


def test_padding_mask_changes_loss_exactly() -> None:
    model = make()
    obs = TINY.fake_obs(2)
    b, h, a = 2, TINY.chunk_size, 5  # action dim 5 of max 8: dims 5..7 are padding
    actions = torch.randn(b, h, a)
    is_pad = torch.zeros(b, h, dtype=torch.bool)
    is_pad[0, 6:] = True
    noise = torch.randn(b, h, TINY.max_action_dim)
    time = torch.tensor([0.4, 0.7])

    loss = model.compute_loss(obs, actions, is_pad, noise=noise, time=time)

    # the same number by hand: MSE over real steps and real dimensions only
    padded = torch.nn.functional.pad(actions, (0, TINY.max_action_dim - a))
    x_t, u_t = noisy_actions(padded, noise, time)
    with torch.no_grad():
        v_t = model.denoise_step(x_t, time, model.fill_cache(obs, h))
    real = (v_t - u_t)[:, :, :a]
    expected = torch.cat([real[0, :6].flatten(), real[1].flatten()]).square().mean()
    torch.testing.assert_close(loss, expected)

    # padded steps' targets do not matter; real ones do
    changed = actions.clone()
    changed[0, 6:] += 100.0
    torch.testing.assert_close(model.compute_loss(obs, changed, is_pad, noise=noise, time=time), loss)
    changed[1, 0] += 1.0
    assert not torch.allclose(model.compute_loss(obs, changed, is_pad, noise=noise, time=time), loss)
    # no masking would give a different number
    assert not torch.allclose(model.compute_loss(obs, actions, torch.zeros_like(is_pad), noise=noise, time=time), loss)
    assert loss_mask(is_pad, a, TINY.max_action_dim).sum() == (h + 6) * a


def test_per_sample_loss_averages_to_batch_loss_when_unpadded() -> None:
    model = make()
    obs = TINY.fake_obs(2)
    actions = torch.randn(2, TINY.chunk_size, 4)
    is_pad = torch.zeros(2, TINY.chunk_size, dtype=torch.bool)
    noise, time = torch.randn(2, TINY.chunk_size, TINY.max_action_dim), torch.tensor([0.2, 0.9])
    per = model.compute_loss(obs, actions, is_pad, noise=noise, time=time, per_sample=True)
    assert per.shape == (2,)
    torch.testing.assert_close(per.mean(), model.compute_loss(obs, actions, is_pad, noise=noise, time=time))


def test_flow_samples_share_one_prefix_and_equal_repeated_observations() -> None:
    """k noise draws per observation in training: the same losses and gradients as the observations repeated k
    times with those draws, but the prefix computed once per observation."""
    k, b = 3, 2
    model = make().train()
    model.cfg = TINY.replace(flow_samples=k)
    obs = hard_obs(TINY, batch=b)
    actions = torch.randn(b, TINY.chunk_size, 5)
    is_pad = torch.zeros(b, TINY.chunk_size, dtype=torch.bool)
    is_pad[1, 7:] = True
    prefixes = []
    fill = model.fill_cache
    model.fill_cache = lambda o, h: prefixes.append(o.batch_size) or fill(o, h)  # type: ignore[method-assign]
    torch.manual_seed(5)
    per = model.compute_loss(obs, actions, is_pad, per_sample=True)
    assert per.shape == (b,) and prefixes == [b]

    torch.manual_seed(5)  # the draws compute_loss made: noise for the b*k rows, then their times
    noise = torch.randn(b * k, TINY.chunk_size, TINY.max_action_dim)
    time = sample_time(b * k, torch.device("cpu"))
    rep = Observation(images=[im.repeat_interleave(k, 0) for im in obs.images],
                      image_masks=obs.image_masks.repeat_interleave(k, 0), state=obs.state.repeat_interleave(k, 0),
                      tokens=obs.tokens.repeat_interleave(k, 0), token_mask=obs.token_mask.repeat_interleave(k, 0))
    expected = model.compute_loss(rep, actions.repeat_interleave(k, 0), is_pad.repeat_interleave(k, 0), noise=noise,
                                  time=time, per_sample=True).view(b, k).mean(1)  # fmt: skip
    torch.testing.assert_close(per, expected)
    assert not torch.allclose(expected, model.compute_loss(rep, actions.repeat_interleave(k, 0),
                                                           is_pad.repeat_interleave(k, 0), noise=noise.flip(0),
                                                           time=time, per_sample=True).view(b, k).mean(1))  # fmt: skip
    model.eval()  # outside training one draw per observation, as given
    prefixes.clear()
    torch.manual_seed(5)
    assert model.compute_loss(obs, actions, is_pad, per_sample=True).shape == (b,) and prefixes == [b]


def test_state_gradient_through_frozen_vlm_matches_joint_pass() -> None:
    """The split prefix (context without autograd, state token with it) gives the joint pass's gradients."""
    model = make().train()
    obs = hard_obs(TINY, batch=2)
    actions = torch.randn(2, TINY.chunk_size, TINY.max_action_dim)
    noise, time = torch.randn_like(actions), torch.tensor([0.5, 0.25])
    x_t, u_t = noisy_actions(actions, noise, time)

    model.compute_loss(obs, actions, torch.zeros(2, TINY.chunk_size, dtype=torch.bool), noise, time).backward()
    cached = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    (model.denoise_full(obs, x_t, time) - u_t).square().mean().backward()
    full = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    assert "state_proj.weight" in cached and cached["state_proj.weight"].abs().sum() > 0
    assert not any(n.startswith("backbone.") for n in cached)  # frozen
    assert cached.keys() == full.keys()
    for name in cached:
        torch.testing.assert_close(cached[name], full[name], atol=1e-5, rtol=1e-4)


def test_overfits_a_fixed_batch() -> None:
    model = make().train()
    obs = TINY.fake_obs(4, num_cameras=1, seed=3)
    g = torch.Generator().manual_seed(0)
    actions = torch.randn(4, TINY.chunk_size, 3, generator=g)
    noise = torch.randn(4, TINY.chunk_size, TINY.max_action_dim, generator=g)
    time = torch.tensor([0.2, 0.4, 0.6, 0.9])
    is_pad = torch.zeros(4, TINY.chunk_size, dtype=torch.bool)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(150):
        loss = model.compute_loss(obs, actions, is_pad, noise=noise, time=time)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_bad_sizes_are_named() -> None:
    model = make()
    obs = TINY.fake_obs(1, state_dim=TINY.max_state_dim + 1)
    with pytest.raises(ValueError, match="state has dimension 9, above the model's maximum of 8"):
        model.sample_actions(obs)
    with pytest.raises(ValueError, match="action has dimension 9"):
        model.compute_loss(TINY.fake_obs(1), torch.zeros(1, TINY.chunk_size, 9),
                           torch.zeros(1, TINY.chunk_size, dtype=torch.bool))
    with pytest.raises(ValueError, match="num_vlm_layers"):
        TINY.replace(num_vlm_layers=5).create()
