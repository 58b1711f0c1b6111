"""Chunking strategies under inference delay: real-time chunking keeps consecutive actions continuous where naive
asynchronous execution jumps; the delay estimate is robust to one hiccup; sync holds; ensembling averages."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vla.model.rtc import prefix_weights
from vla.runtime.chunking import DelayEstimator, make_strategy
from vla.runtime.policy import PolicySpec, RequestObservation

H, A = 30, 2


class ReplanningPolicy:
    """Each call plans a new straight path from a fresh random offset (a policy whose plans differ between
    chunks, as a real one's do). Given a prefix it behaves like guided real-time chunking: the first `delay`
    actions equal the prefix, then the plan is inpainted with RTC's decaying prefix weights."""

    spec = PolicySpec(H, ("a.pos", "b.pos"), ("a.pos", "b.pos"), {}, 30.0, True)

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def reset(self) -> None:
        pass

    def infer(self, obs: RequestObservation) -> np.ndarray:
        start = np.asarray(obs.state, np.float32) + self.rng.uniform(-8, 8, A)
        chunk = start + np.linspace(0, 3, H)[:, None] * np.ones(A)
        if obs.prefix is not None and len(obs.prefix):
            n = min(len(obs.prefix), H)
            w = prefix_weights(H, min(obs.delay, n), n).numpy()[:, None]
            target = np.zeros_like(chunk)
            target[:n] = obs.prefix[:n]
            chunk = w * target + (1 - w) * chunk
        return chunk.astype(np.float32)


def drive(strategy_name: str, latency_ticks: int, ticks: int = 300) -> tuple[list[float], int]:
    """Run a strategy against the replanning policy with a fixed delay; -> per-tick jumps, ticks held."""
    policy = ReplanningPolicy()
    strategy = make_strategy(strategy_name, H, execute=10, initial_delay=latency_ticks)
    state = np.zeros(A, np.float32)
    in_flight: list[tuple[int, int, np.ndarray]] = []
    last, jumps, holds, started = state.copy(), [], 0, False
    for tick in range(ticks):
        req = strategy.request(tick)
        if req is not None:
            chunk = policy.infer(RequestObservation(state, {}, "", req.prefix, req.delay))
            in_flight.append((tick + latency_ticks, tick, chunk))
        for item in [x for x in in_flight if x[0] <= tick]:
            in_flight.remove(item)
            strategy.receive(item[2], item[1], tick)
        action = strategy.action(tick)
        if action is None:
            holds += 1
            action = last
        if started:  # the step onto the very first chunk is a handover, blended by the loop, not a switch
            jumps.append(float(np.abs(action - last).max()))
        started = started or strategy.chunk is not None
        last = state = np.asarray(action, np.float32)
    return jumps, holds


@pytest.mark.parametrize("latency_ms", [0, 100, 200])
def test_rtc_is_continuous_where_naive_async_jumps(latency_ms: int) -> None:
    delay = math.ceil(latency_ms / 1000 * 30)
    rtc, _ = drive("rtc", delay)
    naive, _ = drive("async", delay)
    assert max(naive) > 4.0, max(naive)  # every switch lands on a new plan, offset by up to 8
    assert max(rtc) < max(naive) / 3, (max(rtc), max(naive))  # the switch eases onto the new plan instead
    assert max(rtc) < 2.0


def test_sync_holds_during_inference_and_ensemble_averages() -> None:
    _, holds = drive("sync", 6, ticks=160)
    assert holds >= 6 * (160 // 16) - 6  # about `delay` held ticks per chunk
    strategy = make_strategy("ensemble", 4, execute=1)
    strategy.receive(np.full((4, 1), 0.0, np.float32), 0, 0)
    strategy.receive(np.full((4, 1), 10.0, np.float32), 1, 1)
    w = np.exp(-0.01 * np.arange(2))
    assert strategy.action(2)[0] == pytest.approx((0 * w[0] + 10 * w[1]) / w.sum())


def test_delay_estimate_ignores_a_single_hiccup() -> None:
    est = DelayEstimator(window=20, quantile=0.9)
    for _ in range(19):
        est.add(3)
    est.add(40)  # one very slow chunk
    assert est.delay == 3
    for _ in range(4):
        est.add(6)  # the latency really went up
    assert est.delay == 6


def test_a_request_never_claims_more_committed_actions_than_its_prefix() -> None:
    """After a slow first chunk (111 ticks for a 10-action chunk) the expected delay outlasts the plan: the request
    says every action it still has is committed, and no more (a policy server rejects delay > len(prefix))."""
    rtc = make_strategy("rtc", chunk_size=10, execute=5)
    first = rtc.request(0)
    assert first is not None and first.delay == 0
    rtc.receive(np.zeros((10, 6), np.float32), tick_obs=0, now=111)
    for tick in range(111, 121):
        rtc.action(tick)
        request = rtc.request(tick)
        if request is not None:
            n = 0 if request.prefix is None else len(request.prefix)
            assert 0 <= request.delay <= n, (request.delay, n)
            break
    else:
        raise AssertionError("no request after the first chunk")


def test_unknown_strategy_is_named() -> None:
    with pytest.raises(ValueError, match="choose one of sync, async, rtc, ensemble"):
        make_strategy("magic", 10)


def test_simulated_latency_harness_in_the_sim() -> None:
    """`vla chunking-eval`'s harness: sync holds the arm during inference, real-time chunking does not."""
    from vla.envs.so101 import FEATURE_NAMES
    from vla.runtime.evaluate import evaluate_chunking, format_table
    from vla.runtime.policy import ScriptedPolicy

    spec = PolicySpec(20, FEATURE_NAMES, FEATURE_NAMES, {"front": (96, 96), "wrist": (96, 96)}, 30.0, True)
    results = evaluate_chunking(ScriptedPolicy(spec), "so101/reach", ["sync", "rtc"], [0.2], episodes=1,
                                execute=8, progress=False)  # fmt: skip
    sync, rtc = results
    assert sync.hold_fraction > 0.3 and rtc.hold_fraction < 0.15, format_table(results)
    assert rtc.switch_jump_max < 1.0  # the scripted policy continues the prefix it is given
