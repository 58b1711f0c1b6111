"""Chunking strategies compared in simulation, with inference latency simulated in control ticks.

    vla runtime-eval --policy CKPT --env so101/reach --latency 0 0.1 0.2 --strategies sync async rtc ensemble

Each episode steps a sim env at its control rate. A request at tick k is answered from the observation of tick k
but delivered `ceil(latency * fps)` ticks later, as a real inference process would deliver it; meanwhile the
strategy decides what the arm does. Deterministic (sim time, not wall time), so strategies are compared on equal
terms. Reported per strategy and latency: success rate; the change of the commanded joints (degrees, gripper
excluded) at the ticks where a new chunk takes over, against the policy's own per-tick motion elsewhere (a switch
jump well above the latter is what a chunk boundary without real-time chunking looks like); and the share of ticks
spent holding still for want of an action.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from vla.runtime.chunking import make_strategy
from vla.runtime.policy import ChunkPolicy, RequestObservation


@dataclass
class ChunkingResult:
    strategy: str
    latency_s: float
    episodes: int
    success_rate: float
    switch_jump_mean: float  # degrees: the change of command at the ticks where a new chunk took over
    switch_jump_max: float
    within_jump_p99: float  # degrees per tick at all other ticks (the policy's own motion); nan if none
    hold_fraction: float  # ticks without a fresh action / all ticks
    requests: int


def run_episode(env, policy: ChunkPolicy, strategy_name: str, latency_s: float, seed: int, execute: int | None
                ) -> tuple[bool, list[float], list[float], int, int, int]:  # fmt: skip
    """One episode -> success, jumps at chunk switches, jumps at other ticks, held ticks, ticks, requests."""
    fps = float(env.metadata["render_fps"])
    delay = math.ceil(latency_s * fps - 1e-9)
    strategy = make_strategy(strategy_name, policy.spec.chunk_size, execute, initial_delay=delay)
    obs, info = env.reset(seed=seed)
    policy.reset()
    in_flight: list[tuple[int, int, np.ndarray]] = []  # (deliver at tick, observation tick, chunk)
    last = np.asarray(obs["agent_pos"], np.float32)
    switch_jumps: list[float] = []
    within: list[float] = []
    holds, requests, success, started = 0, 0, False, False
    for tick in range(env._max_episode_steps):
        req = strategy.request(tick)
        if req is not None:
            requests += 1
            chunk = policy.infer(RequestObservation(obs["agent_pos"], obs["pixels"], env.task_description,
                                                    req.prefix, req.delay))  # fmt: skip
            in_flight.append((tick + delay, tick, chunk))
        switched = False
        for item in [x for x in in_flight if x[0] <= tick]:
            in_flight.remove(item)
            strategy.receive(item[2], item[1], tick)
            switched = True
        action = strategy.action(tick)
        if action is None:
            holds += 1
            action = last
        if started:  # (the step onto the very first chunk is the same for every strategy)
            jump = float(np.abs(action[:-1] - last[:-1]).max())
            (switch_jumps if switched else within).append(jump)
        started = started or strategy.chunk is not None
        last = np.asarray(action, np.float32)
        obs, _, terminated, truncated, info = env.step(last)
        success = success or bool(info["is_success"])
        if terminated or truncated:
            break
    return success, switch_jumps, within, holds, tick + 1, requests


def evaluate_chunking(policy: ChunkPolicy, env_name: str, strategies: list[str], latencies: list[float],
                      episodes: int = 10, seed: int = 2_000_000, execute: int | None = None,
                      progress: bool = True) -> list[ChunkingResult]:  # fmt: skip
    from tqdm import tqdm

    from vla.envs.suite import make_env

    env = make_env(env_name)
    results = []
    bar = tqdm(total=len(strategies) * len(latencies) * episodes, desc="chunking", unit="ep", disable=not progress)
    try:
        for latency in latencies:
            for name in strategies:
                wins, switches, within, holds, ticks, requests = 0, [], [], 0, 0, 0
                for ep in range(episodes):
                    ok, sj, wj, h, n, r = run_episode(env, policy, name, latency, seed + ep, execute)
                    wins, holds, ticks, requests = wins + ok, holds + h, ticks + n, requests + r
                    switches += sj
                    within += wj
                    bar.update(1)
                results.append(ChunkingResult(
                    name, latency, episodes, wins / episodes, float(np.mean(switches)) if switches else 0.0,
                    float(np.max(switches)) if switches else 0.0,
                    float(np.percentile(within, 99)) if within else math.nan,  # every tick a switch (ensemble)
                    holds / ticks,
                    requests,
                ))  # fmt: skip
    finally:
        bar.close()
        env.close()
    return results


def format_table(results: list[ChunkingResult]) -> str:
    lines = ["| latency (ms) | strategy | success | jump at chunk switches, mean / max (deg) | other ticks, p99 (deg) "
             "| holding | requests |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        jumps = f"{r.switch_jump_mean:.1f} / {r.switch_jump_max:.1f}"
        within = "-" if math.isnan(r.within_jump_p99) else f"{r.within_jump_p99:.1f}"
        lines.append(f"| {r.latency_s * 1000:.0f} | {r.strategy} | {r.success_rate:.0%} | {jumps} | {within} | "
                     f"{r.hold_fraction:.0%} | {r.requests} |")  # fmt: skip
    return "\n".join(lines)


def as_dicts(results: list[ChunkingResult]) -> list[dict]:
    return [asdict(r) for r in results]
