"""What the robot side asks of a policy: one action chunk per observation, in the arm's units.

`ChunkPolicy` is the one interface behind the inference worker, the policy server and its client, so a loop does
not care whether the network runs in a local process or on a remote GPU. No torch here: `CheckpointPolicy`
(vla.runtime.checkpoint) wraps a trained VLA; `ScriptedPolicy` is a deterministic stand-in for tests and
benchmarks with a settable compute time.

Real-time chunking: `RequestObservation.prefix` holds the actions the robot will execute while this chunk is being
computed (the `delay` first actions of the new chunk's time window); a policy that supports it returns a chunk
whose first `delay` actions continue them (and a policy that does not ignores it).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class RequestObservation:
    """One inference request. Shapes: state (S,) float32; images name -> (H, W, 3) uint8; prefix (d, A)."""

    state: np.ndarray
    images: dict[str, np.ndarray] = field(default_factory=dict)
    task: str = ""
    prefix: np.ndarray | None = None  # actions already committed for the start of the new chunk
    delay: int = 0  # how many of them will have executed when the chunk arrives (len(prefix) >= delay)


@dataclass(frozen=True)
class PolicySpec:
    """What a policy expects and returns, so both ends can check each other before the first request."""

    chunk_size: int
    action_names: tuple[str, ...]
    state_names: tuple[str, ...]
    cameras: dict[str, tuple[int, int]]  # name -> (height, width) the policy was trained on
    fps: float
    supports_prefix: bool = False


class ChunkPolicy(Protocol):
    spec: PolicySpec

    def reset(self) -> None: ...
    def infer(self, obs: RequestObservation) -> np.ndarray:
        """(chunk_size, A) float32 actions in the arm's units, the first one for the observation's own tick."""
        ...


class ScriptedPolicy:
    """Moves each joint along a slow sinusoid around the observed state; takes `latency` seconds per chunk.

    With a prefix it continues it exactly (so tests can check real-time chunking plumbing without a network).
    With `error`, every request fails with that message instead (a policy that is broken, for dry runs and tests).
    """

    def __init__(self, spec: PolicySpec, latency: float = 0.0, amplitude: float = 10.0, period: float = 4.0,
                 error: str = ""):  # fmt: skip
        self.spec, self.latency, self.amplitude, self.period, self.error = spec, latency, amplitude, period, error
        self.t0 = time.monotonic()
        self.calls = 0

    def reset(self) -> None:
        self.calls = 0

    def infer(self, obs: RequestObservation) -> np.ndarray:
        start = time.monotonic()
        self.calls += 1
        if self.error:
            raise RuntimeError(self.error)
        n, a = self.spec.chunk_size, len(self.spec.action_names)
        t = (start - self.t0) + np.arange(n) / self.spec.fps
        wave = self.amplitude * np.sin(2 * np.pi * t / self.period)[:, None] * np.ones(a)
        chunk = (np.asarray(obs.state, np.float32)[:a] + wave).astype(np.float32)
        if obs.prefix is not None and len(obs.prefix):
            d = min(len(obs.prefix), n)
            chunk[:d] = obs.prefix[:d]
        rest = self.latency - (time.monotonic() - start)
        if rest > 0:
            time.sleep(rest)
        return chunk


def add_inference_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--dtype` and `--compile` for commands that run a checkpoint."""
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "int8"],
                        help="a checkpoint's inference precision (default: as trained); int8 is the fastest on CPUs "
                             "without AMX, bfloat16 on GPUs")  # fmt: skip
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile a checkpoint's inference path (the first chunk then compiles)")
