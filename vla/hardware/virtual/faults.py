"""Faults the virtual arm can inject, chosen per run: `Faults.parse(["drop=0.05", "silent=4@2.0", ...])`.

    drop=P          each reply loses one byte with probability P
    corrupt=P       each reply has one bit flipped with probability P
    late=P[:S]      each reply comes S seconds late (default 0.05) with probability P
    error=ID:FLAG   servo ID reports FLAG in every status (feetech: voltage, angle, overheat, current, overload;
                    dynamixel: voltage, overheat, encoder, shock, overload; in its hardware-error register)
    silent=ID[@T]   servo ID stops answering T seconds after start (default 0)
    vanish@T        the port disappears T seconds after start (the pseudo-terminal is closed)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

FEETECH_BITS = {"voltage": 0x01, "angle": 0x02, "overheat": 0x04, "current": 0x08, "overload": 0x20}
DYNAMIXEL_BITS = {"voltage": 0x01, "overheat": 0x04, "encoder": 0x08, "shock": 0x10, "overload": 0x20}


@dataclass
class Faults:
    drop: float = 0.0
    corrupt: float = 0.0
    late: float = 0.0
    late_s: float = 0.05
    errors: dict[int, str] = field(default_factory=dict)  # servo id -> flag name
    silent: dict[int, float] = field(default_factory=dict)  # servo id -> seconds after start
    vanish_s: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    @classmethod
    def parse(cls, specs: list[str], seed: int = 0) -> Faults:
        faults = cls(seed=seed)
        for spec in specs:
            try:
                faults._add(spec)
            except (ValueError, IndexError):
                raise ValueError(f"bad fault '{spec}'; see `vla virtual-arm --help` for the forms") from None
        return faults

    def _add(self, spec: str) -> None:
        if spec.startswith("vanish@"):
            self.vanish_s = float(spec.split("@")[1])
            return
        key, value = spec.split("=", 1)
        if key in ("drop", "corrupt"):
            setattr(self, key, float(value))
        elif key == "late":
            rate, _, seconds = value.partition(":")
            self.late = float(rate)
            self.late_s = float(seconds) if seconds else self.late_s
        elif key == "error":
            servo, flag = value.split(":")
            if flag not in FEETECH_BITS and flag not in DYNAMIXEL_BITS:
                raise ValueError(flag)
            self.errors[int(servo)] = flag
        elif key == "silent":
            servo, _, after = value.partition("@")
            self.silent[int(servo)] = float(after) if after else 0.0
        else:
            raise ValueError(key)

    def is_silent(self, servo_id: int, elapsed: float) -> bool:
        return servo_id in self.silent and elapsed >= self.silent[servo_id]

    def mangle(self, reply: bytes) -> tuple[bytes, float]:
        """A reply after byte faults, and the extra delay before it is sent."""
        data = bytearray(reply)
        if self.drop and self.rng.random() < self.drop:
            del data[self.rng.randrange(len(data))]
        if self.corrupt and self.rng.random() < self.corrupt:
            data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
        delay = self.late_s if self.late and self.rng.random() < self.late else 0.0
        return bytes(data), delay
