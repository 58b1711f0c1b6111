"""Chunking strategies compared in simulation, with inference latency simulated in control ticks.

    vla runtime-eval --policy CKPT --env so101/reach --latency 0 0.1 0.2 --strategies sync async rtc ensemble

Each episode steps a sim env at its control rate. A request at tick k is answered from the observation of tick k
but delivered `ceil(latency * fps)` ticks later, as a real inference process would deliver it; meanwhile the
strategy decides what the arm does. Deterministic (sim time, not wall time), so strategies are compared on equal
terms. Reported per strategy and latency: success rate, the largest and the 99th-percentile per-tick change of the
commanded joints after the first tick (degrees; a jump is what a chunk boundary without real-time chunking looks
like), and the share of ticks spent holding still for want of an action.
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
    max_jump: float  # degrees per tick, over all joints but the gripper, all episodes
    p99_jump: float
    hold_fraction: float  # ticks without a fresh action / all ticks
    requests: int


def run_episode(env, policy: ChunkPolicy, strategy_name: str, latency_s: float, seed: int, execute: int | None
                ) -> tuple[bool, list[float], int, int, int]:  # fmt: skip
    fps = float(env.metadata["render_fps"])
    delay = math.ceil(latency_s * fps - 1e-9)
    strategy = make_strategy(strategy_name, policy.spec.chunk_size, execute, initial_delay=delay)
    obs, info = env.reset(seed=seed)
    policy.reset()
    in_flight: list[tuple[int, int, np.ndarray]] = []  # (deliver at tick, observation tick, chunk)
    last = np.asarray(obs["agent_pos"], np.float32)
    jumps, holds, requests, success = [], 0, 0, False
    for tick in range(env._max_episode_steps):
        req = strategy.request(tick)
        if req is not None:
            requests += 1
            chunk = policy.infer(RequestObservation(obs["agent_pos"], obs["pixels"], env.task_description,
                                                    req.prefix, req.delay))  # fmt: skip
            in_flight.append((tick + delay, tick, chunk))
        for item in [x for x in in_flight if x[0] <= tick]:
            in_flight.remove(item)
            strategy.receive(item[2], item[1], tick)
        action = strategy.action(tick)
        if action is None:
            holds += 1
            action = last
        if tick:  # the step onto the first chunk is the same for every strategy
            jumps.append(float(np.abs(action[:-1] - last[:-1]).max()))
        last = np.asarray(action, np.float32)
        obs, _, terminated, truncated, info = env.step(last)
        success = success or bool(info["is_success"])
        if terminated or truncated:
            break
    return success, jumps, holds, tick + 1, requests


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
                wins, jumps, holds, ticks, requests = 0, [], 0, 0, 0
                for ep in range(episodes):
                    ok, j, h, n, r = run_episode(env, policy, name, latency, seed + ep, execute)
                    wins, holds, ticks, requests = wins + ok, holds + h, ticks + n, requests + r
                    jumps += j
                    bar.update(1)
                results.append(ChunkingResult(name, latency, episodes, wins / episodes, float(np.max(jumps)),
                                              float(np.percentile(jumps, 99)), holds / ticks, requests))  # fmt: skip
    finally:
        bar.close()
        env.close()
    return results


def format_table(results: list[ChunkingResult]) -> str:
    lines = ["| latency (ms) | strategy | success | max jump (deg/tick) | p99 jump | holding | requests |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        lines.append(f"| {r.latency_s * 1000:.0f} | {r.strategy} | {r.success_rate:.0%} | {r.max_jump:.1f} | "
                     f"{r.p99_jump:.1f} | {r.hold_fraction:.0%} | {r.requests} |")  # fmt: skip
    return "\n".join(lines)


def as_dicts(results: list[ChunkingResult]) -> list[dict]:
    return [asdict(r) for r in results]
