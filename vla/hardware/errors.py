"""Typed errors of the servo buses. Every failure says which port, which servo(s) and what to do.

Hierarchy: `BusError` (anything on a bus) -> `CommError` (bytes did not arrive or were wrong: `TimeoutError_`,
`CorruptPacketError`), `PortGoneError` (the device vanished: unplugged, powered off), `ServoStatusError` (a servo
answered with error flags set: voltage, overheat, overload ...), and `UnsafeActionError` from the safety layer.
"""

from __future__ import annotations


class BusError(RuntimeError):
    """Base of every servo-bus error."""


class CommError(BusError):
    """The reply was missing or unreadable after the configured retries."""

    def __init__(self, message: str, ids: tuple[int, ...] = ()):
        super().__init__(message)
        self.ids = ids


class ServoTimeoutError(CommError):
    """No (complete) reply within the timeout."""


class CorruptPacketError(CommError):
    """A reply with a bad checksum, header, length or id."""


class PortGoneError(BusError):
    """The serial device disappeared or can no longer be read or written."""


class ServoStatusError(BusError):
    """Servos reported error flags in their status packets. `flags` maps servo id -> names of the set flags.

    `values` holds what was read alongside (a read still returns data when a flag is set), so a caller that
    chooses to continue can; by default the error is raised, never dropped.
    """

    def __init__(self, port: str, flags: dict[int, tuple[str, ...]], values: dict[int, int] | None = None):
        self.port, self.flags, self.values = port, flags, values or {}
        detail = "; ".join(f"id {i}: {', '.join(f)}" for i, f in sorted(flags.items()))
        super().__init__(f"servo error on {port}: {detail}. Check power supply, load and temperature.")


class UnsafeActionError(ValueError):
    """An action the safety layer refuses outright (not a number, unknown joint)."""
