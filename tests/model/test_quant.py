"""int8 inference weights (`vla.model.quant`) and the model's int8 fast path."""

from __future__ import annotations

import torch

from vla.model import PRESETS, VLAModel, rtc
from vla.model.quant import Int8Weight, int8_mm, quantize_weight

TINY = PRESETS["tiny"].replace(num_vlm_layers=2)


def test_int8_matmul_tracks_float_with_per_channel_scales() -> None:
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(40, 64, generator=g), torch.randn(64, 48, generator=g)
    w[:, 3] *= 100.0  # one loud output channel must not cost the others their precision
    x[5] *= 50.0  # nor one loud token the other tokens
    q = quantize_weight(w)
    assert q.q.dtype == torch.int8 and q.scale.shape == (48,)
    exact, approx = x @ w, int8_mm(x, q)
    quiet = [j for j in range(48) if j != 3]
    err = (approx - exact)[:, quiet].norm() / exact[:, quiet].norm()  # the quiet channels, all tokens
    rows = (approx - exact)[:, quiet].norm(dim=1) / exact[:, quiet].norm(dim=1)  # each token, its own scale
    assert err < 0.02 and rows.max() < 0.02
    assert not torch.equal(approx, exact)


def test_int8_matmul_is_differentiable_for_guidance() -> None:
    x = torch.randn(6, 16, requires_grad=True)
    q = quantize_weight(torch.randn(16, 8))
    (grad,) = torch.autograd.grad(int8_mm(x, q).sum(), x)
    dequantised = q.q.float() * q.scale
    torch.testing.assert_close(grad, dequantised.sum(dim=1).expand(6, -1))


def model(int8: bool, frozen: bool = True) -> VLAModel:
    torch.manual_seed(0)
    m = TINY.replace(freeze_vlm=frozen).create().eval()
    m.use_int8(int8)
    return m


def test_int8_actions_stay_close_to_float32_and_run_in_int8() -> None:
    obs = TINY.fake_obs(2, num_cameras=2, seed=4)
    noise = torch.randn(2, TINY.chunk_size, TINY.max_action_dim)
    exact = model(False).sample_actions(obs, noise=noise.clone())
    quantised = model(True)
    approx = quantised.sample_actions(obs, noise=noise.clone())
    rel = float((approx - exact).abs().max() / exact.abs().max())
    # measured 0.33-0.37% (AMD EPYC, no AMX) and 0.7-0.9% (issue 16's machine): about twice the worst
    assert 0 < rel < 0.02
    fused = [quantised._fused_expert, quantised._fused_vlm, quantised.backbone._fused_vision]
    assert all(isinstance(cache._layers[0].w_in if hasattr(cache._layers[0], "w_in") else cache._layers[0].w_qkv,
                          Int8Weight) for cache in fused)


def train_loss(int8: bool, frozen: bool) -> tuple[float, dict[str, torch.Tensor], VLAModel]:
    obs = TINY.fake_obs(2, seed=5)
    g = torch.Generator().manual_seed(5)
    actions = torch.randn(2, TINY.chunk_size, 3, generator=g)
    noise = torch.randn(2, TINY.chunk_size, TINY.max_action_dim, generator=g)
    time, pad = torch.rand(2, generator=g), torch.zeros(2, TINY.chunk_size, dtype=torch.bool)
    m = model(int8, frozen).train()
    loss = m.compute_loss(obs, actions, pad, noise=noise, time=time)
    loss.backward()
    return loss.item(), {n: p.grad for n, p in m.named_parameters() if p.grad is not None}, m


def test_training_a_frozen_vlm_uses_int8_only_where_no_gradient_flows() -> None:
    exact, exact_grads, _ = train_loss(int8=False, frozen=True)
    approx, approx_grads, m = train_loss(int8=True, frozen=True)
    # measured 1.25e-4 relative (AMD EPYC, no AMX), 6e-5 in the README's run: about twice the worst
    assert approx != exact and abs(approx - exact) < 3e-4 * abs(exact)
    assert approx_grads.keys() == exact_grads.keys() and not any("backbone" in n for n in approx_grads)
    flat = [torch.cat([g[n].flatten() for n in sorted(g)]) for g in (exact_grads, approx_grads)]
    assert torch.nn.functional.cosine_similarity(flat[0], flat[1], dim=0) > 0.999
    assert isinstance(m._fused_vlm._layers[0].w_in, Int8Weight)  # the frozen context ran in int8
    assert isinstance(m.backbone._fused_vision._layers[0].w_qkv, Int8Weight)
    # a VLM that trains gets gradients through every layer: no int8 anywhere, the float32 loss exactly
    assert train_loss(int8=True, frozen=False)[0] == train_loss(int8=False, frozen=False)[0]


def test_guided_sampling_with_int8_weights() -> None:
    obs = TINY.fake_obs(1, seed=6)
    target = torch.randn(1, TINY.chunk_size, TINY.max_action_dim)
    noise = torch.randn(1, TINY.chunk_size, TINY.max_action_dim)
    guided = [rtc.sample_guided(model(int8), obs, target, delay=2, overlap=5, noise=noise.clone())
              for int8 in (False, True)]  # fmt: skip
    assert torch.isfinite(guided[1]).all()
    # measured 0.22% (AMD EPYC, no AMX); held to the plain int8 sampling's bound
    assert float((guided[1] - guided[0]).abs().max() / guided[0].abs().max()) < 0.02


def test_compiled_int8_equals_eager_int8() -> None:
    """`dtype=int8` with `compile=true` (the fastest inference on CPUs without AMX): the eager int8 actions."""
    obs = TINY.fake_obs(1, seed=8)
    noise = torch.randn(1, TINY.chunk_size, TINY.max_action_dim)
    eager, compiled = model(True), model(True)
    compiled.compile_layers()
    expected = eager.sample_actions(obs, noise=noise.clone())
    torch.testing.assert_close(compiled.sample_actions(obs, noise=noise.clone()), expected, atol=1e-4, rtol=1e-4)
