"""The control loop: one action to the robot every tick, whatever inference, cameras or the operator do.

Each tick, on an absolute schedule (`vla.runtime.rt.Ticker`):
  read the arm -> take the latest camera frames -> publish the observation to the inference worker -> take in any
  chunk that arrived -> maybe request the next one -> choose the action (policy or operator, blended at
  handovers) -> watchdog -> send it through the follower's safety layer -> log.
Nothing in a tick waits for inference or a camera: the worker runs in its own process and frames are read from
shared memory as they are.

Handover: `request_mode("policy")` / `request_mode("teleop")` (a key in `vla deploy`, or automatic when the
operator moves the leader while the policy drives) switches the source; the command then blends linearly from the
last commanded pose to the new source over `blend_s`, or longer when the gap is wide (at most `handover_speed`),
so neither direction jumps (and the follower's step limit holds regardless).

Watchdog: in policy mode, a tick without a fresh policy action holds the last command; after `safe_after_s`
without one, the configured safe state applies ("hold": keep holding and resume when actions return;
"release": torque off and stop).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from vla.runtime.chunking import make_strategy
from vla.runtime.rt import RealtimeStatus, Ticker, enable_realtime
from vla.runtime.worker import ChunkReady, InferenceWorker

POLICY, HUMAN, HOLD = 0, 1, 2  # the source of each tick's command, as logged and recorded


class RobotIO(Protocol):
    names: tuple[str, ...]

    def read(self) -> np.ndarray: ...
    def frames(self) -> dict[str, np.ndarray]: ...
    def send(self, action: np.ndarray) -> np.ndarray: ...
    def release(self) -> None: ...


class TeleopIO(Protocol):
    def read(self) -> np.ndarray: ...


@dataclass
class LoopConfig:
    fps: float = 30.0
    strategy: str = "rtc"
    execute: int | None = None  # actions of each chunk executed before the next request (default: half)
    blend_s: float = 0.5  # handovers blend over at least this long ...
    handover_speed: float = 45.0  # ... and long enough that closing the gap needs at most this (units/s)
    safe_after_s: float = 1.0
    safe_state: str = "hold"  # "hold" | "release"
    takeover_deg: float = 4.0  # leader motion (while the policy drives) that hands control to the operator
    realtime: bool = True


@dataclass
class RunLog:
    """Per tick: time, lateness, source, command, measured state, whether a chunk took over; per chunk: latency."""

    names: tuple[str, ...]
    t: list[float] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    source: list[int] = field(default_factory=list)
    command: list[np.ndarray] = field(default_factory=list)
    measured: list[np.ndarray] = field(default_factory=list)
    switch: list[bool] = field(default_factory=list)
    chunk_latency_s: list[float] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    realtime: str = ""
    stop_reason: str = ""
    overruns: int = 0  # ticks skipped because one ran over a whole period
    inference_errors: dict[str, int] = field(default_factory=dict)  # message -> how many times (logged once)

    def policy_failure(self) -> str | None:
        """Why a run that had a policy ended without one worth the name: no chunk at all, or more failed requests
        than chunks; None when the policy ran."""
        failed, chunks = sum(self.inference_errors.values()), len(self.chunk_latency_s)
        if chunks and failed <= chunks:
            return None
        first = next(iter(self.inference_errors), "")
        why = f"; first error: {first}" if first else " (no error came back: the policy never answered)"
        return f"the policy produced {chunks} chunk(s) and {failed} failed request(s){why}"

    def arrays(self) -> dict[str, np.ndarray]:
        return {"t": np.array(self.t), "lateness": np.array(self.lateness), "source": np.array(self.source),
                "command": np.array(self.command), "measured": np.array(self.measured),
                "switch": np.array(self.switch)}  # fmt: skip


class ControlLoop:
    def __init__(self, robot: RobotIO, worker: InferenceWorker | None, config: LoopConfig,
                 teleop: TeleopIO | None = None, on_tick=None,
                 on_mode_request: Callable[[str], None] | None = None):  # fmt: skip
        """`on_tick(tick, observation_state, frames, command, source)`: e.g. the intervention recorder.
        `on_mode_request(mode)`: told of every accepted `request_mode` (e.g. a scripted operator lets go)."""
        if worker is None and teleop is None:
            raise ValueError("a control loop needs a policy worker, a teleoperator, or both")
        if config.safe_state not in ("hold", "release"):
            raise ValueError(f"safe_state must be 'hold' or 'release', not '{config.safe_state}'")
        self.robot, self.worker, self.config, self.teleop, self.on_tick = robot, worker, config, teleop, on_tick
        self.on_mode_request = on_mode_request
        chunk = worker.spec.chunk_size if worker is not None and worker.spec is not None else 1
        self.strategy = make_strategy(config.strategy, chunk, config.execute)
        self.mode = "teleop" if teleop is not None else "policy"
        self._requested: str | None = None
        self._stop = threading.Event()
        self.log = RunLog(tuple(robot.names))
        # per-run state of `run`: the handover in progress, the last tick with a fresh action, the leader's pose
        # when the policy took over (operator motion is measured from it)
        self._blend = _Blend(np.zeros(len(robot.names), np.float32), 0, 1)
        self._last_fresh = 0
        self._leader_ref: np.ndarray | None = None

    # -- control from other threads -----------------------------------------------------------------------
    def request_mode(self, mode: str) -> None:
        if mode not in ("policy", "teleop"):
            raise ValueError(f"mode must be 'policy' or 'teleop', not '{mode}'")
        if (mode == "teleop" and self.teleop is None) or (mode == "policy" and self.worker is None):
            raise ValueError(f"cannot switch to {mode}: nothing to take control")
        if self.on_mode_request is not None:
            self.on_mode_request(mode)
        self._requested = mode

    def stop(self) -> None:
        self._stop.set()

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self, duration_s: float | None = None, max_ticks: int | None = None) -> RunLog:
        """Tick until `stop()`, the duration or tick limit, or the watchdog's release; -> the run's log."""
        cfg = self.config
        rt = enable_realtime() if cfg.realtime else RealtimeStatus(False, False, ["real-time: off (as asked)"])
        self.log.realtime = str(rt)
        ticker = Ticker(cfg.fps)
        command = self.robot.read()
        self._blend = _Blend(command.copy(), -self._min_blend, self._min_blend)
        self._last_fresh, self._leader_ref = 0, None
        if self.mode == "policy" and self.worker is not None:
            self.strategy.reset()
        limit = max_ticks if max_ticks is not None else None if duration_s is None else round(duration_s * cfg.fps)
        ticker.start()
        tick = 0
        while not self._stop.is_set():
            if limit is not None and tick >= limit:
                self.log.stop_reason = "duration"
                break
            now = time.monotonic()
            state, frames = self.robot.read(), self.robot.frames()
            leader = self.teleop.read() if self.teleop is not None else None
            switch = self._take_chunks(tick, now, state, frames)
            self._choose_driver(tick, now, leader, command)
            chosen = self._target(tick, now, leader, command)
            if chosen is None:  # the watchdog released the arm
                break
            target, source = chosen
            command = self.robot.send(self._blend.towards(tick, target, self.mode == "teleop", cfg))
            self._record(tick, now - ticker.t0, ticker, source, command, state, frames, switch)
            tick = ticker.wait()
        else:
            self.log.stop_reason = self.log.stop_reason or "stopped"
        self.log.overruns = ticker.overruns
        return self.log

    @property
    def _min_blend(self) -> int:
        return max(1, round(self.config.blend_s * self.config.fps))

    def _take_chunks(self, tick: int, now: float, state: np.ndarray, frames: dict[str, np.ndarray]) -> bool:
        """Publish this tick's observation and take in what the worker sent; -> whether a new chunk arrived."""
        if self.worker is None:
            return False
        switch = False
        self.worker.publish(tick, state, frames)
        for event in self.worker.poll():
            if isinstance(event, ChunkReady):
                self.strategy.receive(event.chunk, event.tick, tick)
                self.log.chunk_latency_s.append((tick - event.tick) / self.config.fps)
                switch = True
            else:
                self.strategy.fail()
                seen = self.log.inference_errors.get(event.message, 0)
                self.log.inference_errors[event.message] = seen + 1
                if not seen:  # each distinct error once, whole; repeats are counted
                    self.log.events.append((now, f"inference failed: {event.message}"))
        return switch

    def _choose_driver(self, tick: int, now: float, leader: np.ndarray | None, command: np.ndarray) -> None:
        """Apply a requested switch, or the operator's takeover (moving the leader while the policy drives)."""
        mode = self._requested or self.mode
        if mode == "policy" and self.mode == "teleop" and leader is not None:
            self._leader_ref = leader.copy()  # operator motion is measured from here
        if (self.mode == "policy" and leader is not None and self._leader_ref is not None
                and np.abs(leader - self._leader_ref)[:-1].max() > self.config.takeover_deg):  # fmt: skip
            mode = "teleop"
            self.log.events.append((now, "operator took over"))
        if mode != self.mode:
            self.mode = mode
            self._blend = _Blend(command.copy(), tick, self._min_blend)
            self.log.events.append((now, f"control -> {mode}"))
            if mode == "policy":
                self.strategy.reset()
                self._last_fresh = tick
        self._requested = None

    def _target(self, tick: int, now: float, leader: np.ndarray | None, command: np.ndarray
                ) -> tuple[np.ndarray, int] | None:  # fmt: skip
        """-> (where this tick aims, who decided it): the leader, the policy's action, or holding still; None when
        the watchdog released the arm."""
        if self.mode == "teleop":
            assert leader is not None
            return leader, HUMAN
        if self.worker is not None and not self.worker.busy:
            req = self.strategy.request(tick)
            if req is not None:
                self.worker.request(req)
        action = self.strategy.action(tick)
        if action is not None:
            self._last_fresh = tick
            return action, POLICY
        cfg = self.config
        if (tick - self._last_fresh) / cfg.fps > cfg.safe_after_s:
            self.log.events.append((now, f"watchdog: no fresh action for {cfg.safe_after_s:.1f} s"))
            if cfg.safe_state == "release":
                self.robot.release()
                self.log.stop_reason = "watchdog"
                return None
            self._last_fresh = tick  # keep holding; say so again after another period
        return command, HOLD

    def _record(self, tick: int, t: float, ticker: Ticker, source: int, command: np.ndarray, state: np.ndarray,
                frames: dict[str, np.ndarray], switch: bool) -> None:  # fmt: skip
        log = self.log
        log.t.append(t)
        log.lateness.append(ticker.lateness[-1] if ticker.lateness else 0.0)
        log.source.append(source)
        log.command.append(command.copy())
        log.measured.append(state.copy())
        log.switch.append(switch)
        if self.on_tick is not None:
            self.on_tick(tick, state, frames, command, source)


@dataclass
class _Blend:
    """A handover: the command moves linearly from `start_from` to the new source's target, starting at tick
    `start`, over `ticks` (at least `blend_s`, longer when the gap is wide: at most `handover_speed`)."""

    start_from: np.ndarray
    start: int
    ticks: int

    def towards(self, tick: int, target: np.ndarray, teleop: bool, cfg: LoopConfig) -> np.ndarray:
        target = np.asarray(target, np.float32)
        if tick == self.start or (tick == 0 and teleop):  # a handover starts: how long to blend
            gap = float(np.abs(target - self.start_from).max())
            self.start = tick
            self.ticks = max(self.ticks, int(np.ceil(gap / cfg.handover_speed * cfg.fps)))
        alpha = min(1.0, (tick - self.start) / self.ticks)
        return (1 - alpha) * self.start_from + alpha * target
