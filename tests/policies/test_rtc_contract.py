"""LeRobot 0.6.1's real-time chunking contract: `lerobot-rollout --inference.type=rtc` drives our policy.

The engine calls `predict_action_chunk(batch, inference_delay=d, prev_chunk_left_over=L)` with L the previous
chunk's unexecuted actions (normalised, (T, A), zero-padded to its execution horizon). Our policy maps that onto
its guidance (with the true vector-Jacobian product) or training-time conditioning.
"""

from __future__ import annotations

import torch
from lerobot.rollout.inference.rtc import supports_rtc_inference
from test_policy import build, raw_batch


def test_lerobot_accepts_our_policy_for_rtc() -> None:
    policy, _, _ = build()
    assert supports_rtc_inference(policy)


def chunks(policy, batch, **kwargs) -> torch.Tensor:  # type: ignore[no-untyped-def]
    noise = torch.randn(1, policy.config.chunk_size, policy.config.max_action_dim, generator=torch.Generator()
                        .manual_seed(3))  # fmt: skip
    return policy.predict_action_chunk(batch, noise=noise, **kwargs)


def test_left_over_actions_are_continued_and_padding_is_ignored() -> None:
    policy, pre, _ = build()
    policy.eval()
    batch = pre(raw_batch(batch=1))
    plain = chunks(policy, batch)
    left_over = torch.full((4, 4), 1.5)  # the previous chunk's plan for this chunk's first 4 steps (normalised)
    guided = chunks(policy, batch, inference_delay=2, prev_chunk_left_over=left_over)
    # the committed steps move onto the left-over plan: much closer than the unguided chunk is
    error_guided = (guided[0, :2] - left_over[:2]).abs().mean()
    error_plain = (plain[0, :2] - left_over[:2]).abs().mean()
    assert error_guided < 0.25 * error_plain, (error_guided, error_plain)
    # LeRobot pads the left-over with zero rows up to its execution horizon: they are not followed
    padded = torch.cat([left_over, torch.zeros(2, 4)])
    assert torch.allclose(chunks(policy, batch, inference_delay=2, prev_chunk_left_over=padded), guided, atol=1e-6)
    # rtc off: the left-over is ignored
    off = chunks(policy, batch, inference_delay=2, prev_chunk_left_over=left_over, rtc_mode="off")
    assert torch.allclose(off, plain, atol=1e-6)


def test_training_mode_holds_the_committed_actions_exactly() -> None:
    policy, pre, _ = build(rtc_max_delay=3, rtc_mode="training")
    policy.eval()
    left_over = torch.randn(5, 4)
    chunk = chunks(policy, pre(raw_batch(batch=1)), inference_delay=3, prev_chunk_left_over=left_over)
    assert torch.allclose(chunk[0, :3], left_over[:3], atol=1e-6)
