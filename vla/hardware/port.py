"""A serial port for half-duplex servo buses: blocking reads with deadlines on the monotonic clock.

pyserial opens and configures the device (raw mode, baud rate, exclusive access, low-latency mode where the
driver has it); reads and writes then go straight to the file descriptor. A read waits in `poll()` until bytes
arrive or its deadline passes, so the CPU sleeps while the servos answer. The vendor SDKs instead spin on
non-blocking reads against wall-clock timeouts: they burn a core, and under SCHED_FIFO the spinning thread starves
the tty and loses packets. A device that vanishes (unplugged, powered off, a closed pseudo-terminal) raises
`PortGoneError` at once instead of looking like a slow servo.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import threading
import time
from typing import Protocol

from vla.hardware.errors import CommError, PortGoneError

WAKE_LATENCY = 40e-6  # s: how much later than asked a short sleep returns, with timer slack at 1 ns (Linux VM)
# s: after the timed sleep, read without blocking this long before blocking in poll(). The bytes are due about
# then, and a wake-up from poll() costs 20-30 us here: with the spin the p50 round trip equals the busy-polling
# SDK's (0.694 vs 0.699 ms in bench_bus.py) while waiting uses 7.7% of a core instead of 5.4%. Bounded, so a
# real-time thread cannot starve the tty with it.
SPIN_AFTER_SLEEP = 30e-6
_thread_state = threading.local()


def precise_sleeps() -> None:
    """Cut this thread's timer slack from Linux's default 50 us to 1 ns (prctl PR_SET_TIMERSLACK), so that short
    sleeps end when asked (measured here: 97 -> 32 us late at the median). Real-time threads have no slack anyway."""
    if getattr(_thread_state, "slack_set", False):
        return
    _thread_state.slack_set = True
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK


class Port(Protocol):
    """What a bus needs of a port (tests substitute recording or scripted ports)."""

    path: str

    @property
    def byte_time(self) -> float: ...
    def write(self, data: bytes) -> None: ...
    def read_until(self, n: int, deadline: float, not_before: float = 0.0) -> bytes: ...
    def flush_input(self) -> None: ...
    def close(self) -> None: ...


class SerialPort:
    """`write(data)`, `read_until(n, deadline)`, `flush_input()`, `close()` on one serial device."""

    def __init__(self, path: str, baudrate: int = 1_000_000):
        import serial

        self.path, self.baudrate = path, baudrate
        try:
            self._serial = serial.Serial(path, baudrate=baudrate, timeout=0, write_timeout=1.0, exclusive=True)
        except serial.SerialException as err:
            raise PortGoneError(f"cannot open serial port {path}: {err}. Is the arm plugged in and powered, and is "
                                f"the port right (`ls /dev/serial/by-id/`)?") from err  # fmt: skip
        # USB-serial adapters otherwise batch bytes for up to 16 ms; a pseudo-terminal has no such ioctl
        with contextlib.suppress(AttributeError, OSError, ValueError):
            self._serial.set_low_latency_mode(True)
        self.fd: int = self._serial.fd
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        self._out_poll = select.poll()
        self._out_poll.register(self.fd, select.POLLOUT)

    @property
    def byte_time(self) -> float:
        """Seconds on the wire per byte (start bit, 8 data bits, stop bit)."""
        return 10.0 / self.baudrate

    def write(self, data: bytes, timeout: float = 1.0) -> None:
        """Write all of `data`; if the output buffer is full (writing faster than the baud rate), wait for room."""
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CommError(f"serial port {self.path}: output stuck for {timeout:.1f} s (flow control, or "
                                    "nothing draining the line)") from None  # fmt: skip
                self._out_poll.poll(left * 1000.0)
            except OSError as err:
                raise self._gone(err) from err

    def read_until(self, n: int, deadline: float, not_before: float = 0.0) -> bytes:
        """Up to `n` bytes, returning as soon as all `n` arrived or at `deadline` (time.monotonic()) with fewer.

        `not_before`: when the bytes cannot all be there yet (they are still on the wire), sleep until then
        first: one wake-up instead of one per packet as the servos answer in turn. Every wake-up costs CPU time
        (about 20 us here, as much as parsing the packets). After that sleep, read without blocking for up to
        `SPIN_AFTER_SLEEP` (the bytes are due), then block in poll() for whatever is still missing.
        """
        wait = not_before - time.monotonic() - WAKE_LATENCY
        if wait > 0:
            precise_sleeps()
            time.sleep(wait)
        buf = bytearray()
        spin_until = time.monotonic() + SPIN_AFTER_SLEEP if wait > 0 else 0.0
        while len(buf) < n and time.monotonic() < spin_until:
            chunk = self._read_now(n - len(buf))
            if chunk:  # raw mode with VMIN 0: an empty read only means nothing yet (poll tells a closed end)
                buf += chunk
        while len(buf) < n:
            timeout_ms = (deadline - time.monotonic()) * 1000.0
            if timeout_ms <= 0:
                break
            events = self._poll.poll(max(timeout_ms, 0.05))
            if not events:
                continue
            chunk = self._read_now(n - len(buf))
            if chunk is None:
                continue
            if not chunk:  # readable but empty: the other end is gone
                raise self._gone(None)
            buf += chunk
        return bytes(buf)

    def flush_input(self) -> None:
        try:
            self._serial.reset_input_buffer()
        except Exception as err:  # termios.error or OSError once the device is gone
            raise self._gone(err) from err

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._serial.close()

    def _read_now(self, n: int) -> bytes | None:
        """Up to `n` bytes without blocking: what is there (b"" when nothing is), None when the read would block."""
        try:
            return os.read(self.fd, n)
        except BlockingIOError:
            return None
        except OSError as err:
            raise self._gone(err) from err

    def _gone(self, err: OSError | Exception | None) -> PortGoneError:
        why = f" ({err})" if err else ""
        return PortGoneError(f"serial port {self.path} stopped working{why}: the arm was unplugged, lost power, or "
                             "another program took the port")  # fmt: skip
