"""How action chunks become one action per control tick, and when to ask for the next chunk.

Time is counted in control ticks. A chunk computed from the observation of tick k holds the actions for ticks
k, k+1, ..., k+H-1; it arrives `delay` ticks later (inference time), when its first `delay` actions are already
in the past. Strategies (`make_strategy(name)`):

- `sync`: ask, hold still until the chunk arrives, execute `execute` actions of it from its start, ask again.
  Nothing jumps, but the arm stops at every chunk boundary for the whole inference time.
- `async`: ask again `execute` ticks into the current chunk; when the new chunk arrives, switch to it at once
  (skipping its stale first `delay` actions). The new plan starts wherever it starts: a jump at every switch.
- `ensemble` (ACT's temporal ensembling): ask every `execute` ticks; each tick's action is the average of every
  chunk's prediction for that tick, weighted exp(-m * age) by how early the prediction was made.
- `rtc`: like `async`, but the request carries the actions that will execute while the chunk is computed (the
  current plan from the request's tick on) and the expected delay; the policy returns a chunk that continues
  them (vla.model.rtc), so the switch is seamless.

The expected delay comes from measured latencies: the 90th percentile of the last `window` (not the worst ever
seen, which one hiccup would inflate for the rest of the run), in ticks, rounded up.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass
class Request:
    tick: int  # the observation's tick
    prefix: np.ndarray | None  # (n, A) actions already planned for ticks tick, tick+1, ... (rtc only)
    delay: int  # expected ticks until the chunk arrives


class DelayEstimator:
    def __init__(self, window: int = 20, quantile: float = 0.9, initial: int = 0):
        self.latencies: deque[int] = deque(maxlen=window)
        self.quantile, self.initial = quantile, initial

    def add(self, ticks: int) -> None:
        self.latencies.append(ticks)

    @property
    def delay(self) -> int:
        if not self.latencies:
            return self.initial
        return math.ceil(float(np.quantile(np.array(self.latencies), self.quantile)))


class Strategy:
    """Base: `request(tick)` says whether (and with what) to ask for a chunk; `receive(chunk, tick_obs, now)`
    takes one in; `action(tick)` is the action for this tick, or None (hold the last one)."""

    name = ""

    def __init__(self, chunk_size: int, execute: int, initial_delay: int = 0):
        if not 1 <= execute <= chunk_size:
            raise ValueError(f"execute={execute} must be in [1, chunk_size={chunk_size}]")
        self.chunk_size, self.execute = chunk_size, execute
        self.delays = DelayEstimator(initial=initial_delay)
        self.pending: int | None = None  # tick of the request in flight
        self.chunk: np.ndarray | None = None
        self.chunk_tick = 0  # the tick the current chunk's first action belongs to
        self.switches: list[int] = []  # ticks at which a new chunk took over (chunk boundaries, for plots)

    def reset(self) -> None:
        self.pending, self.chunk, self.switches = None, None, []

    def request(self, tick: int) -> Request | None:
        if self.pending is not None or not self._due(tick):
            return None
        self.pending = tick
        prefix = self._prefix(tick)
        # the delay counts committed actions of the prefix: never more than it holds (a slow first chunk can make
        # the expected delay longer than what is left of the plan)
        return Request(tick, prefix, min(self.delays.delay, 0 if prefix is None else len(prefix)))

    def receive(self, chunk: np.ndarray, tick_obs: int, now: int) -> None:
        """Take a chunk computed from the observation of `tick_obs` (which can be later than the request's tick:
        the worker uses the newest observation) and arriving at tick `now`."""
        self.delays.add(now - tick_obs)
        self.pending = None  # one request in flight at a time
        self._take(np.asarray(chunk, dtype=np.float32), tick_obs, now)

    def fail(self) -> None:
        """The request in flight will not be answered (worker or server error): allow a new one."""
        self.pending = None

    def action(self, tick: int) -> np.ndarray | None:
        if self.chunk is None:
            return None
        i = tick - self.chunk_tick
        return self.chunk[i] if 0 <= i < len(self.chunk) else None

    # -- per strategy --------------------------------------------------------------------------------------
    def _due(self, tick: int) -> bool:
        return self.chunk is None or tick - self.chunk_tick >= self.execute

    def _prefix(self, tick: int) -> np.ndarray | None:
        return None

    def _take(self, chunk: np.ndarray, tick_obs: int, now: int) -> None:
        self.chunk, self.chunk_tick = chunk, tick_obs
        self.switches.append(now)


class Sync(Strategy):
    name = "sync"

    def _take(self, chunk: np.ndarray, tick_obs: int, now: int) -> None:
        # The arm held still while waiting, so the chunk is executed from its start, beginning now.
        self.chunk, self.chunk_tick = chunk, now
        self.switches.append(now)

    def action(self, tick: int) -> np.ndarray | None:
        if self.chunk is None:
            return None
        i = tick - self.chunk_tick
        return self.chunk[i] if 0 <= i < self.execute else None  # past `execute`: hold until the next chunk


class Async(Strategy):
    name = "async"


class RTC(Strategy):
    name = "rtc"

    def _prefix(self, tick: int) -> np.ndarray | None:
        if self.chunk is None:
            return None
        start = tick - self.chunk_tick
        return self.chunk[start:].copy() if start < len(self.chunk) else None


class Ensemble(Strategy):
    """ACT's temporal ensembling over every chunk that predicted this tick; older predictions weigh more
    (w = exp(-m * i), i = 0 for the oldest), as in the ACT paper (m = 0.01)."""

    name = "ensemble"

    def __init__(self, chunk_size: int, execute: int = 1, initial_delay: int = 0, m: float = 0.01):
        super().__init__(chunk_size, execute, initial_delay)
        self.m = m
        self.chunks: deque[tuple[int, np.ndarray]] = deque()

    def reset(self) -> None:
        super().reset()
        self.chunks.clear()

    def _take(self, chunk: np.ndarray, tick_obs: int, now: int) -> None:
        super()._take(chunk, tick_obs, now)
        self.chunks.append((tick_obs, chunk))
        while self.chunks and self.chunks[0][0] + len(self.chunks[0][1]) <= now:
            self.chunks.popleft()

    def action(self, tick: int) -> np.ndarray | None:
        preds = [c[tick - t0] for t0, c in self.chunks if 0 <= tick - t0 < len(c)]
        if not preds:
            return None
        w = np.exp(-self.m * np.arange(len(preds)))
        return (np.stack(preds) * w[:, None]).sum(axis=0) / w.sum()


STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (Sync, Async, RTC, Ensemble)}


def make_strategy(name: str, chunk_size: int, execute: int | None = None, initial_delay: int = 0) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown chunking strategy '{name}'; choose one of {', '.join(STRATEGIES)}")
    if execute is None:
        execute = 1 if name == "ensemble" else max(1, chunk_size // 2)
    return STRATEGIES[name](chunk_size, execute, initial_delay)
