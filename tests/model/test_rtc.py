"""Real-time chunking in the model: the guidance's vector-Jacobian product is the true one, guidance inpaints the
frozen prefix, and a model trained with training-time RTC continues whichever prefix it is given."""

from __future__ import annotations

import pytest
import torch

from vla.model import PRESETS, VLAModel, rtc

TINY = PRESETS["tiny"]


def make(seed: int = 0, **overrides) -> VLAModel:
    torch.manual_seed(seed)
    return TINY.replace(**overrides).create().eval()


def test_prefix_weights_schedule() -> None:
    w = rtc.prefix_weights(10, delay=3, overlap=8)
    assert w[:3].tolist() == [1.0, 1.0, 1.0] and w[8:].tolist() == [0.0, 0.0]
    assert all(w[i] > w[i + 1] for i in range(3, 8))  # decays over the overlap
    with pytest.raises(ValueError, match="delay"):
        rtc.prefix_weights(10, delay=9, overlap=8)


def test_guidance_uses_the_true_vector_jacobian_product() -> None:
    model = make()
    obs = TINY.fake_obs(1, seed=2)
    h, a = TINY.chunk_size, TINY.max_action_dim
    x = torch.randn(1, h, a)
    t = torch.full((1,), 0.6)
    target = torch.randn(1, h, a)
    weights = rtc.prefix_weights(h, 3, 8)
    with torch.no_grad():
        cache = model.fill_cache(obs, h)
        v = model.denoise_step(x, t, cache)

    def a_hat(x_flat: torch.Tensor) -> torch.Tensor:
        xx = x_flat.view(1, h, a)
        return (xx - 0.6 * model.denoise_step(xx, t, cache)).reshape(-1)

    jac = torch.autograd.functional.jacobian(a_hat, x.reshape(-1))  # (H*A, H*A), the reference
    error = ((target - a_hat(x.reshape(-1)).view(1, h, a)) * weights[None, :, None]).reshape(-1)
    expected_g = (jac.T @ error).view(1, h, a)
    scale = rtc.guidance_scale(0.6, beta=5.0)
    guided = rtc.guided_velocity(model, x, t, cache, target, weights, beta=5.0)
    torch.testing.assert_close(guided, v - scale * expected_g, atol=1e-5, rtol=1e-4)

    # LeRobot 0.4.4's version (v evaluated without gradients) applies the error itself, J = identity: not the same
    naive = rtc.guided_velocity(model, x, t, cache, target, weights, beta=5.0, jacobian=False)
    torch.testing.assert_close(naive, v - scale * error.view(1, h, a), atol=1e-5, rtol=1e-4)
    assert (naive - guided).abs().max() > 1e-3


def test_guided_sampling_inpaints_the_frozen_prefix() -> None:
    model = make(seed=1)
    obs = TINY.fake_obs(2, seed=4)
    h, d = TINY.chunk_size, 4
    noise = torch.randn(2, h, TINY.max_action_dim)
    free = model.sample_actions(obs, noise=noise.clone())
    target = free + torch.randn_like(free)  # a previous plan the unguided sample does not follow
    guided = rtc.sample_guided(model, obs, target, delay=d, overlap=7, noise=noise.clone())
    before = (free[:, :d] - target[:, :d]).abs().mean()
    after = (guided[:, :d] - target[:, :d]).abs().mean()
    assert after < before / 4, (float(before), float(after))
    assert (guided[:, 8:] - free[:, 8:]).abs().mean() < (guided[:, :d] - free[:, :d]).abs().mean()


def test_training_time_rtc_continues_the_given_prefix() -> None:
    """One observation, two demonstrated chunks (rising, falling): only the prefix says which one is meant."""
    torch.manual_seed(0)
    model = TINY.replace(rtc_max_delay=4).create().train()
    h, d = TINY.chunk_size, 3
    ramp = torch.linspace(0.0, 1.5, h)
    chunks = torch.stack([torch.stack([ramp, ramp], -1), torch.stack([-ramp, -ramp], -1)])  # (2, H, 2)
    obs = TINY.fake_obs(1, seed=5)
    batch_obs = TINY.fake_obs(64, seed=5)
    for field in ("state", "tokens", "token_mask", "image_masks"):
        setattr(batch_obs, field, getattr(obs, field).expand(64, *getattr(obs, field).shape[1:]).clone())
    batch_obs.images = [im.expand(64, *im.shape[1:]).clone() for im in obs.images]
    pad = torch.zeros(64, h, dtype=torch.bool)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 400)
    for _ in range(400):
        actions = chunks[torch.randint(0, 2, (64,))]
        loss = model.compute_loss(batch_obs, actions, pad)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    model.eval()
    for k in (0, 1):
        prefix = torch.nn.functional.pad(chunks[k : k + 1], (0, TINY.max_action_dim - 2))
        out = rtc.sample_with_prefix(model, obs, prefix, delay=d, num_steps=10)[0, :, :2]
        torch.testing.assert_close(out[:d], chunks[k, :d])  # the committed actions, unchanged
        assert (out[d:] - chunks[k, d:]).abs().mean() < 0.15, (k, out[d:, 0])
        assert (out[d:] - chunks[1 - k, d:]).abs().mean() > 0.8  # the other mode is not what it chose


def test_delay_leaves_the_committed_steps_out_of_the_loss() -> None:
    model = make()
    obs = TINY.fake_obs(2, seed=6)
    actions = torch.randn(2, TINY.chunk_size, 3)
    noise = torch.randn(2, TINY.chunk_size, TINY.max_action_dim)
    pad = torch.zeros(2, TINY.chunk_size, dtype=torch.bool)
    time = torch.tensor([0.3, 0.8])
    delay = torch.tensor([2, 5])
    with torch.no_grad():
        loss = model.compute_loss(obs, actions, pad, noise=noise, time=time, delay=delay, per_sample=True)
        # reference: per-token times 0 on the committed steps, the mean squared error over the others only
        t_tok = rtc.prefix_times(time, delay, TINY.chunk_size)
        padded = torch.nn.functional.pad(actions, (0, TINY.max_action_dim - 3))
        x_t = t_tok[..., None] * noise + (1 - t_tok[..., None]) * padded
        v = model.denoise_step(x_t, t_tok, model.fill_cache(obs, TINY.chunk_size))
        for i, k in enumerate(delay.tolist()):
            err = (v[i, k:, :3] - (noise[i, k:, :3] - padded[i, k:, :3])).square().mean()
            torch.testing.assert_close(loss[i], err)
        assert torch.equal(x_t[0, :2], padded[0, :2])  # committed actions enter clean
