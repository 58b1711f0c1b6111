"""`ServoBus`: instructions to servos by id and address, with bounded retries and typed errors. Thread-safe.

One transaction = flush stale input, write one instruction, then read the status packets it asks for until all
arrived or the deadline passed (poll-based, see `vla.hardware.port`). The deadline is the configured timeout plus
the bytes' time on the wire at the bus's baud rate. What can go wrong, and what happens:
- a reply is missing or short (dropped bytes, a servo that stopped answering): after `retries` more attempts for
  the servos still missing, `ServoTimeoutError` naming them;
- a reply is corrupt (checksum, header, wrong id or length): counted, skipped, retried like a missing reply, then
  `CorruptPacketError`;
- before a retry the bus waits until the line has been quiet for `settle` seconds, so a late reply to the failed
  attempt cannot be taken for the answer to the next one;
- a servo sets error flags: the transaction completes and then raises `ServoStatusError` with the flags and the
  values read (`check_status=False` returns them instead);
- the port vanishes: `PortGoneError` at once, no retries.
Counters of all of this are in `bus.stats`. Values here are raw unsigned register contents; `vla.hardware.motors`
adds names, signs and units.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vla.hardware.errors import CorruptPacketError, ServoStatusError, ServoTimeoutError
from vla.hardware.port import Port, SerialPort
from vla.hardware.protocol import (
    ACTION,
    PING,
    READ,
    REG_WRITE,
    SYNC_READ,
    SYNC_WRITE,
    WRITE,
    Garbage,
    Incomplete,
    Protocol,
    Status,
)

RETURN_DELAY_ALLOWANCE = 0.0005  # s per reply: the servos' factory return delay (250 x 2 us) if not lowered


@dataclass
class BusStats:
    transactions: int = 0
    retries: int = 0
    timeouts: int = 0  # attempts where some reply was missing
    corrupt: int = 0  # attempts where some bytes were unreadable
    status_errors: int = 0  # status packets with error flags


class ServoBus:
    def __init__(
        self,
        port: str | Port,
        protocol: Protocol,
        baudrate: int = 1_000_000,
        timeout: float = 0.02,
        retries: int = 2,
        settle: float = 0.005,
    ):
        self.port: Port = SerialPort(port, baudrate) if isinstance(port, str) else port
        self.protocol = protocol
        self.timeout, self.retries, self.settle = timeout, retries, settle
        self.stats = BusStats()
        self._lock = threading.RLock()
        self._dirty = True  # input may hold stale bytes: flush before the next request (cleared by clean replies)
        self._packets: dict[tuple, bytes] = {}  # sync-read requests, the same every control tick

    @property
    def name(self) -> str:
        return self.port.path

    def close(self) -> None:
        self.port.close()

    # -- instructions ---------------------------------------------------------------------------------------
    def ping(self, servo_id: int) -> bool:
        """Whether `servo_id` answers (one attempt, no error if it does not)."""
        with self._lock:
            packet = self.protocol.instruction(servo_id, PING)
            got, _ = self._attempt(packet, [servo_id], self.protocol.ping_reply_size)
            return servo_id in got

    def read(self, servo_id: int, address: int, size: int, check_status: bool = True) -> int:
        packet = self.protocol.instruction(servo_id, READ, self.protocol.read_params(address, size))
        status = self._transact(lambda ids: packet, [servo_id], size, f"read {size} bytes at {address}")
        return self._values(status, check_status)[servo_id]

    def write(self, servo_id: int, address: int, value: int, size: int, register: bool = False) -> None:
        """WRITE (or REG_WRITE with `register=True`, applied by `action()`); waits for the acknowledgement."""
        p = self.protocol
        packet = p.instruction(servo_id, REG_WRITE if register else WRITE, p.write_params(address, p.pack(value, size)))
        if servo_id == p.broadcast_id:
            self._send_only(packet)
            return
        self._values(self._transact(lambda ids: packet, [servo_id], 0, f"write {value} at {address}"), True)

    def action(self, servo_id: int | None = None) -> None:
        """Apply registered writes (all servos by default: broadcast, no reply)."""
        p = self.protocol
        target = p.broadcast_id if servo_id is None else servo_id
        packet = p.instruction(target, ACTION)
        if target == p.broadcast_id:
            self._send_only(packet)
            return
        self._values(self._transact(lambda ids: packet, [target], 0, "action"), True)

    def sync_read(self, ids: Sequence[int], address: int, size: int, check_status: bool = True) -> dict[int, int]:
        p = self.protocol

        def packet(pending: list[int]) -> bytes:
            key = (address, size, *pending)
            if key not in self._packets:
                if len(self._packets) > 64:
                    self._packets.clear()
                params = p.sync_read_params(address, size, pending)
                self._packets[key] = p.instruction(p.broadcast_id, SYNC_READ, params)
            return self._packets[key]

        status = self._transact(packet, list(ids), size, f"sync read {size} bytes at {address}")
        return self._values(status, check_status)

    def sync_write(self, address: int, size: int, values: dict[int, int]) -> None:
        """One packet, no replies (the protocol has none for sync write)."""
        p = self.protocol
        data = {servo_id: p.pack(value, size) for servo_id, value in values.items()}
        self._send_only(p.instruction(p.broadcast_id, SYNC_WRITE, p.sync_write_params(address, size, data)))

    # -- the transaction loop -------------------------------------------------------------------------------
    def _send_only(self, packet: bytes) -> None:
        with self._lock:
            self.stats.transactions += 1
            self.port.write(packet)  # no reply to wait for, so stale input can stay until the next read

    def _transact(self, packet_for: Callable[[list[int]], bytes], ids: list[int], n_params: int, what: str
                  ) -> dict[int, Status]:  # fmt: skip
        """Send `packet_for(pending)` until every id in `ids` answered, at most 1 + `retries` times."""
        with self._lock:
            self.stats.transactions += 1
            results: dict[int, Status] = {}
            pending = list(ids)
            corrupt = False
            for attempt in range(self.retries + 1):
                if attempt:
                    self.stats.retries += 1
                    self._wait_quiet()
                got, corrupt = self._attempt(packet_for(pending), pending, n_params)
                results.update(got)
                pending = [i for i in pending if i not in got]
                if not pending:
                    return results
            kind = CorruptPacketError if corrupt else ServoTimeoutError
            problem = "unreadable replies" if corrupt else "no reply"
            raise kind(
                f"{problem} from servo id(s) {pending} on {self.name} ({what}, {self.retries + 1} attempt(s), timeout "
                f"{self.timeout * 1000:.0f} ms). Check the servos' power and cables, the ids and the baud rate.",
                tuple(pending),
            )

    def _attempt(self, packet: bytes, ids: list[int], n_params: int) -> tuple[dict[int, Status], bool]:
        """Send `packet` and collect one status packet with `n_params` parameter bytes from each of `ids`."""
        p, port = self.protocol, self.port
        expected = len(ids) * p.status_size(n_params)
        if self._dirty:
            port.flush_input()
        self._dirty = True
        port.write(packet)
        sent = time.monotonic()
        on_wire = (len(packet) + expected) * port.byte_time  # the replies cannot be complete before this
        deadline = sent + self.timeout + on_wire + len(ids) * RETURN_DELAY_ALLOWANCE
        not_before = sent + on_wire
        buf = bytearray(port.read_until(expected, deadline, not_before))
        got = p.parse_block(buf, ids, n_params)
        if got is not None:  # the usual case: every reply complete, in order, nothing else
            self._dirty = False  # nothing left over, so the next request needs no flush
            return got, False
        got = {}
        consumed = 0
        corrupt = False
        wanted = set(ids)
        while len(got) < len(ids):
            try:
                status, used = p.parse(buf)
            except Incomplete:
                status = None
            except Garbage as err:
                corrupt = True
                consumed += err.skip
                del buf[: err.skip]
                continue
            if status is None:
                more = port.read_until(max(expected - consumed - len(buf), 1), deadline, not_before)
                if not more:
                    break
                buf += more
                continue
            consumed += used
            del buf[:used]
            if status.id not in wanted or status.id in got or len(status.params) != n_params:
                corrupt = True  # a reply for someone else or of the wrong size: not ours to trust
                continue
            if len(got) + 1 < len(ids) and not self._header_follows(buf, deadline):
                # A byte lost inside this packet made it swallow the next packet's first header byte, and the
                # Feetech checksum cannot tell when the lost byte was 0xFF: the next packet must start right here.
                corrupt = True
                continue
            got[status.id] = status
        if len(got) < len(ids):
            self.stats.corrupt += corrupt
            self.stats.timeouts += not corrupt
        return got, corrupt

    def _header_follows(self, buf: bytearray, deadline: float) -> bool:
        """Whether what follows in `buf` (read further if needed) is the start of a packet header, or nothing (the
        servos still to answer may be missing)."""
        header = self.protocol.header
        if len(buf) < len(header):
            buf += self.port.read_until(len(header) - len(buf), deadline)
        return bytes(buf[: len(header)]) == header[: len(buf)]

    def _wait_quiet(self) -> None:
        """Wait until no byte arrived for `settle` s (at most 20 settle periods), then drop what arrived."""
        for _ in range(20):
            if not self.port.read_until(4096, time.monotonic() + self.settle):
                break
        self.port.flush_input()

    def _values(self, statuses: dict[int, Status], check_status: bool) -> dict[int, int]:
        values = {i: self.protocol.unpack(s.params) for i, s in statuses.items()}
        flagged = {i: self.protocol.error_flags(s.error) for i, s in statuses.items() if s.error}
        if flagged:
            self.stats.status_errors += len(flagged)
            if check_status:
                raise ServoStatusError(self.name, flagged, values)
        return values
