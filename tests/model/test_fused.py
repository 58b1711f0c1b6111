"""The eval-mode fast path (`vla.model.fused`) against the module path it replaces."""

from __future__ import annotations

import torch
from torch._dynamo.utils import counters

from vla.model import PRESETS, VLAModel
from vla.model.fused import FusedStack, fuse_layer, rope, rotary_tables
from vla.model.layers import Rotary, apply_rotary

TINY = PRESETS["tiny"].replace(num_vlm_layers=2, self_attn_every_n_layers=2)  # one self-, one cross-attention layer


def make(seed: int = 0) -> VLAModel:
    torch.manual_seed(seed)
    model = TINY.create().eval()
    with torch.no_grad():  # non-trivial norm weights, so folding them into the projections is exercised
        for name, p in model.named_parameters():
            if "layernorm" in name:
                p.uniform_(0.5, 1.5)
            elif "layer_norm" in name:  # the vision tower's LayerNorms: a scale and a shift
                p.uniform_(0.5, 1.5) if name.endswith("weight") else p.normal_(0.0, 0.5)
            elif name.endswith("bias"):  # initialised to zero, which would hide a dropped bias
                p.normal_(0.0, 0.1)
    return model


def module_path(model: VLAModel, fn):  # type: ignore[no-untyped-def]
    """Run fn with the fast path off (training with autograd; nothing in the model is stochastic in train mode)."""
    model.train()
    try:
        with torch.enable_grad():
            assert not model.fast_path
            out = fn()
        return out.detach() if isinstance(out, torch.Tensor) else out
    finally:
        model.eval()


def test_fast_prefix_and_step_equal_module_path() -> None:
    model = make()
    obs = TINY.fake_obs(3, num_cameras=2, seed=4)
    obs.token_mask[1, -3:] = False
    x, t = torch.randn(3, TINY.chunk_size, TINY.max_action_dim), torch.tensor([0.9, 0.5, 0.1])
    with torch.no_grad():
        fast_cache = model.fill_cache(obs, TINY.chunk_size)
        assert isinstance(fast_cache.stack, FusedStack)
        fast_v = model.denoise_step(x, t, fast_cache)
    slow_cache = module_path(model, lambda: model.fill_cache(obs, TINY.chunk_size))
    assert not isinstance(slow_cache.stack, FusedStack)
    for fast_kv, slow_kv in zip(fast_cache.keys + fast_cache.values, slow_cache.keys + slow_cache.values,
                                strict=True):  # fmt: skip
        torch.testing.assert_close(fast_kv, slow_kv.detach(), atol=1e-5, rtol=1e-5)
    slow_v = module_path(model, lambda: model.denoise_step(x, t, slow_cache))
    torch.testing.assert_close(fast_v, slow_v, atol=1e-5, rtol=1e-5)
    assert fast_v.abs().max() > 0.1  # a real velocity, not zeros on both sides


def test_fused_weights_follow_parameter_changes() -> None:
    """An optimiser step or a state-dict load must never leave the fast path on stale weights."""
    model, other = make(0), make(1)
    obs = TINY.fake_obs(1)
    noise = torch.randn(1, TINY.chunk_size, TINY.max_action_dim)
    before = model.sample_actions(obs, noise=noise.clone())

    model.load_state_dict(other.state_dict())
    torch.testing.assert_close(model.sample_actions(obs, noise=noise.clone()), other.sample_actions(obs, noise=noise))

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    model.compute_loss(obs, torch.randn(1, TINY.chunk_size, 4), torch.zeros(1, TINY.chunk_size, dtype=torch.bool)
                       ).backward()  # fmt: skip
    opt.step()
    model.eval()
    after_step = model.sample_actions(obs, noise=noise.clone())
    expected = module_path(model, lambda: model.sample_actions.__wrapped__(model, obs, noise=noise.clone()))
    torch.testing.assert_close(after_step, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(after_step, before, atol=1e-3)


def test_input_gradient_through_fast_path() -> None:
    """Guidance needs d v / d x_t: the fast path gives the module path's vector-Jacobian product."""
    model = make()
    obs = TINY.fake_obs(1, seed=3)
    x = torch.randn(1, TINY.chunk_size, TINY.max_action_dim)
    t, grad_out = torch.full((1,), 0.4), torch.randn(1, TINY.chunk_size, TINY.max_action_dim)

    def vjp(train: bool) -> torch.Tensor:
        model.train(train)
        cache = model.fill_cache(obs, TINY.chunk_size)
        assert isinstance(cache.stack, FusedStack) != train
        xx = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model.denoise_step(xx, t, cache), xx, grad_outputs=grad_out)
        model.eval()
        return g

    torch.testing.assert_close(vjp(False), vjp(True), atol=1e-5, rtol=1e-5)


def test_bfloat16_autocast_fast_path_stays_close() -> None:
    model = make()
    obs = TINY.fake_obs(2)
    noise = torch.randn(2, TINY.chunk_size, TINY.max_action_dim)
    ref = model.sample_actions(obs, noise=noise.clone())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model.sample_actions(obs, noise=noise.clone())
    assert torch.isfinite(low).all()
    # measured 0.3% (AMD EPYC, no AMX) and 1.3-2.8% (issue 16's machine): about twice the worst
    assert (low.float() - ref).abs().max() / ref.abs().max() < 0.05


def test_rope_with_signed_sin_equals_llama_rotary() -> None:
    rotary = Rotary(16, 10_000.0)
    cos, sin = rotary(torch.arange(7)[None])
    x = torch.randn(1, 3, 7, 16)
    torch.testing.assert_close(rope(x, *rotary_tables(cos, sin)), apply_rotary(x, cos, sin))


def test_fused_layer_folds_norms() -> None:
    model = make()
    layer = model.expert.blocks[0]
    fl = fuse_layer(layer, q_only=False, dtype=torch.float32)
    h = torch.randn(5, TINY.expert_width)
    normed = layer.input_layernorm(h)
    expected = torch.cat([layer.self_attn.q_proj(normed), layer.self_attn.k_proj(normed),
                          layer.self_attn.v_proj(normed)], dim=-1)  # fmt: skip
    got = torch.nn.functional.rms_norm(h, (h.shape[-1],), None, fl.eps) @ fl.w_in
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_fast_vision_tower_equals_transformers_modules() -> None:
    model = make()
    backbone = model.backbone
    size = TINY.vision.image_size
    pixels = torch.rand(3, 3, size, size) * 2 - 1
    with torch.no_grad():
        assert backbone.vision_fast_path
        fast = backbone.embed_images(pixels)
        reference = backbone.connector(backbone.vision(pixel_values=pixels).last_hidden_state)
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)
    assert reference.abs().max() > 0.1


def test_trainable_vision_tower_keeps_the_module_path() -> None:
    """With an unfrozen VLM the tower's weights must get gradients, which only transformers' modules give."""
    model = TINY.replace(freeze_vlm=False).create().train()
    backbone = model.backbone
    assert not backbone.vision_fast_path
    pixels = torch.rand(1, 3, TINY.vision.image_size, TINY.vision.image_size)
    backbone.embed_images(pixels).sum().backward()
    fc1 = backbone.vision.encoder.layers[0].mlp.fc1.weight
    assert fc1.grad is not None and fc1.grad.abs().sum() > 0
    with torch.no_grad():
        assert backbone.vision_fast_path


def test_compiled_inference_equals_eager() -> None:
    """`--policy.compile=true`: the compiled vision tower, prefix and denoising step give the eager actions."""
    eager, compiled = make(), make()
    compiled.compile_layers()
    obs = TINY.fake_obs(1, seed=6)
    noise = torch.randn(1, TINY.chunk_size, TINY.max_action_dim)
    expected = eager.sample_actions(obs, noise=noise.clone())
    torch.testing.assert_close(compiled.sample_actions(obs, noise=noise.clone()), expected, atol=1e-5, rtol=1e-5)


def test_compiled_training_step_equals_eager() -> None:
    """`--policy.compile=true` also compiles the training denoising step: the same loss and gradients."""
    eager, compiled = make(), make()
    compiled.compile_layers()
    obs = TINY.fake_obs(2, seed=7)
    g = torch.Generator().manual_seed(7)
    actions = torch.randn(2, TINY.chunk_size, 3, generator=g)
    noise = torch.randn(2, TINY.chunk_size, TINY.max_action_dim, generator=g)
    time, pad = torch.rand(2, generator=g), torch.zeros(2, TINY.chunk_size, dtype=torch.bool)
    grads = []
    graphs = counters["stats"]["unique_graphs"]
    for model in (eager, compiled):
        model.train()
        loss = model.compute_loss(obs, actions, pad, noise=noise, time=time)
        loss.backward()
        grads.append({name: p.grad for name, p in model.named_parameters() if p.grad is not None})
    assert counters["stats"]["unique_graphs"] > graphs  # the step did run compiled
    assert grads[0].keys() == grads[1].keys() and any("expert" in name for name in grads[0])
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-5, rtol=1e-4, msg=name)
