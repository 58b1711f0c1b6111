"""The safety layer on the send path: what a follower is told to do is never what it does unchecked.

Per joint, in the arm's units (degrees; gripper 0-100), in this order:
1. reject: an action with NaN/inf or an unknown joint raises `UnsafeActionError` and nothing is sent;
   a joint missing from the action holds its last command;
2. clamp into the calibrated range (shrunk by `margin`);
3. rate-limit against the last command sent: at most `max_step` per call and `max_velocity` per second
   (measured on the monotonic clock between calls), so a jump in the policy's output becomes a ramp.
The caller gets back what was sent, and `last_report` says which joints were clamped or slowed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from vla.hardware.errors import UnsafeActionError


@dataclass(frozen=True)
class SafetyConfig:
    max_step: float | None = 10.0  # units per send (at 30 Hz: 300 degrees/s)
    max_velocity: float | None = 180.0  # units per second
    margin: float = 0.0  # stay this far inside the calibrated range


@dataclass
class SafetyReport:
    clamped: list[str] = field(default_factory=list)
    rate_limited: list[str] = field(default_factory=list)


class SafetyFilter:
    def __init__(self, limits: dict[str, tuple[float, float]], config: SafetyConfig | None = None):
        self.config = config or SafetyConfig()
        self.limits = {k: (lo + self.config.margin, hi - self.config.margin) for k, (lo, hi) in limits.items()}
        self.last: dict[str, float] | None = None
        self._last_time = 0.0
        self.last_report = SafetyReport()

    def reset(self, reference: dict[str, float]) -> None:
        """Commands continue from `reference` (the measured pose when torque comes on)."""
        self.last = {k: float(reference[k]) for k in self.limits}
        self._last_time = time.monotonic()

    def __call__(self, action: dict[str, float], now: float | None = None) -> dict[str, float]:
        unknown = sorted(set(action) - set(self.limits))
        if unknown:
            raise UnsafeActionError(f"action has unknown joint(s) {unknown}; this arm has {sorted(self.limits)}")
        bad = sorted(k for k, v in action.items() if not math.isfinite(float(v)))
        if bad:
            raise UnsafeActionError(f"action has non-finite values for {bad}: {[action[k] for k in bad]}; not sent")
        if self.last is None:
            raise RuntimeError("SafetyFilter.reset(pose) must be called before the first action")
        now = time.monotonic() if now is None else now
        dt = max(now - self._last_time, 1e-3)
        step = math.inf
        if self.config.max_step is not None:
            step = self.config.max_step
        if self.config.max_velocity is not None:
            step = min(step, self.config.max_velocity * dt)
        report = SafetyReport()
        sent = {}
        for joint, (lo, hi) in self.limits.items():
            want = float(action.get(joint, self.last[joint]))
            value = min(hi, max(lo, want))
            if value != want:
                report.clamped.append(joint)
            prev = self.last[joint]
            if abs(value - prev) > step:
                value = prev + math.copysign(step, value - prev)
                report.rate_limited.append(joint)
            sent[joint] = value
        self.last, self._last_time, self.last_report = sent, now, report
        return dict(sent)
