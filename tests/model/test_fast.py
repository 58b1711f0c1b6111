"""FAST action tokens: DCT + BPE round trip, and the VLM's auxiliary next-token loss beside flow matching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vla.model import PRESETS
from vla.model.fast import CLIP, FastTokenizer, chunks_from_episodes, dct_matrix, quantise

H, A = 10, 6


def smooth_chunks(n: int, seed: int = 0) -> torch.Tensor:
    """(n, H, A) normalised-looking chunks: each dimension a random line plus a slow sine, as arm motions are."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, H)[None, :, None]
    start, slope = torch.randn(n, 1, A, generator=g), torch.randn(n, 1, A, generator=g)
    wave = 0.3 * torch.randn(n, 1, A, generator=g) * torch.sin(3 * t + torch.rand(n, 1, A, generator=g))
    return start + slope * t + wave


def test_dct_is_orthonormal_and_quantisation_error_is_bounded() -> None:
    m = dct_matrix(H)
    torch.testing.assert_close(m @ m.T, torch.eye(H), atol=1e-6, rtol=0)
    chunks = smooth_chunks(200)
    tok = FastTokenizer.fit(chunks, vocab_size=400, scale=10.0)
    ids, valid = tok.encode(chunks[:50])
    rows = [row[: int(v.sum())] for row, v in zip(ids.tolist(), valid, strict=True)]
    decoded = tok.decode(rows, H, A)
    # each coefficient is off by at most 0.5 / scale; the orthonormal inverse keeps each dimension's error norm
    bound = 0.5 / 10.0 * math.sqrt(H)
    assert (decoded - chunks[:50]).abs().max() <= bound
    assert (decoded - chunks[:50]).abs().mean() < 0.03  # far inside the bound: most rounding errors are small


def test_bpe_compresses_smooth_chunks_and_every_row_ends_with_eos() -> None:
    chunks = smooth_chunks(500)
    tok = FastTokenizer.fit(chunks, vocab_size=512, scale=10.0)
    assert tok.vocab_size == 513 and tok.eos == 512
    ids, valid = tok.encode(chunks[:64])
    lengths = valid.sum(1)
    assert lengths.float().mean() < 0.5 * H * A  # 60 coefficients in well under 30 tokens
    last = ids.gather(1, (lengths - 1)[:, None])[:, 0]
    assert (last == tok.eos).all() and (ids[:, :-1][valid[:, 1:]] != tok.eos).all()  # eos only at each end
    assert (ids[~valid] == tok.eos).all()  # padding


def test_serialised_tokenizer_encodes_the_same() -> None:
    chunks = smooth_chunks(100)
    tok = FastTokenizer.fit(chunks, vocab_size=300, scale=10.0)
    again = FastTokenizer(tok.to_json(), 10.0)
    for a, b in zip(tok.encode(chunks), again.encode(chunks), strict=True):
        assert torch.equal(a, b)


def test_decode_takes_any_guess() -> None:
    tok = FastTokenizer.fit(smooth_chunks(50), vocab_size=300, scale=10.0)
    out = tok.decode([[], [5], [tok.eos, 3], list(range(200))], H, A)  # empty, short, eos first, too long
    assert out.shape == (4, H, A) and torch.isfinite(out).all()
    assert (out[0] == 0).all() and (out[2] == 0).all()


def test_values_beyond_the_alphabet_are_clipped() -> None:
    big = torch.full((1, H, A), 100.0)
    assert quantise(big, 10.0).max() == CLIP


def test_fit_errors_are_named() -> None:
    with pytest.raises(ValueError, match="must exceed"):
        FastTokenizer.fit(smooth_chunks(5), vocab_size=100, scale=10.0)
    with pytest.raises(ValueError, match="no action chunks"):
        FastTokenizer.fit(torch.zeros(0, H, A), vocab_size=300, scale=10.0)


def test_chunks_from_episodes_pad_with_the_last_action() -> None:
    actions = np.arange(10, dtype=np.float32)[:, None]
    episodes = np.array([0] * 4 + [1] * 6)
    chunks = chunks_from_episodes(actions, episodes, horizon=3, stride=2)
    assert chunks[:, :, 0].tolist() == [[0, 1, 2], [2, 3, 3], [4, 5, 6], [6, 7, 8], [8, 9, 9]]


def model_and_batch(insulate: bool = False) -> tuple[torch.nn.Module, object, torch.Tensor, tuple]:
    cfg = PRESETS["tiny"]
    tok = FastTokenizer.fit(smooth_chunks(300), vocab_size=300, scale=10.0)
    cfg = cfg.replace(freeze_vlm=False, chunk_size=H, fast_vocab_size=tok.vocab_size, fast_insulate=insulate)
    torch.manual_seed(0)
    model = cfg.create().train()
    chunks = smooth_chunks(4, seed=1)
    return model, cfg.fake_obs(4), chunks, tok.encode(chunks)


def test_fast_tokens_leave_the_expert_loss_unchanged() -> None:
    """The prefix never attends to the FAST tokens: the flow loss is the same with and without them."""
    model, obs, actions, fast = model_and_batch()
    pad = torch.zeros(4, H, dtype=torch.bool)
    noise, time = torch.randn(4, H, 8), torch.rand(4)
    with_fast = model.losses(obs, actions, pad, noise, time, fast=fast)
    without = model.losses(obs, actions, pad, noise, time)
    torch.testing.assert_close(with_fast["flow"], without["flow"], atol=1e-6, rtol=1e-6)
    assert with_fast["fast"].item() == pytest.approx(math.log(model.cfg.fast_vocab_size), rel=0.3)  # near uniform
    total = model.compute_loss(obs, actions, pad, noise, time, fast=fast)
    torch.testing.assert_close(total, with_fast["flow"] + with_fast["fast"])
    per = model.losses(obs, actions, pad, noise, time, per_sample=True, fast=fast)
    assert per["fast"].shape == (4,) and per["flow"].shape == (4,)


def test_fast_loss_learns_and_reaches_the_vlm() -> None:
    model, obs, actions, fast = model_and_batch()
    pad = torch.zeros(4, H, dtype=torch.bool)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss = model.losses(obs, actions, pad, fast=fast)["fast"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first  # one batch's tokens memorised
    layer = model.backbone.layers[-1]
    assert layer.mlp.down_proj.weight.requires_grad  # the last layer's output feeds the FAST head


@pytest.mark.parametrize("insulate", [False, True])
def test_knowledge_insulation_stops_the_expert_gradient_at_the_vlm(insulate: bool) -> None:
    model, obs, actions, fast = model_and_batch(insulate)
    pad = torch.zeros(4, H, dtype=torch.bool)
    model.losses(obs, actions, pad, fast=fast)["flow"].backward()
    vlm_grad = model.backbone.layers[0].self_attn.k_proj.weight.grad
    reached = vlm_grad is not None and vlm_grad.abs().sum() > 0
    assert reached != insulate
    assert model.expert.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0  # the expert itself still learns


def test_fast_needs_a_trained_vlm_and_a_fast_model() -> None:
    with pytest.raises(ValueError, match="freeze_vlm=False"):
        PRESETS["tiny"].replace(freeze_vlm=True, fast_vocab_size=10).create()
    model = PRESETS["tiny"].replace(freeze_vlm=False).create()
    ids = torch.zeros(2, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="fast_vocab_size=0"):
        model.losses(PRESETS["tiny"].fake_obs(2), torch.zeros(2, 10, 8), torch.zeros(2, 10, dtype=torch.bool),
                     fast=(ids, ids.bool()))  # fmt: skip
