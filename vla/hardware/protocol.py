"""Packet formats of the two servo protocols: Feetech SCS/STS and Dynamixel protocol 2.0.

A `Protocol` turns instructions into bytes and bytes into `Status` packets; it knows nothing about ports, timing
or retries (that is `vla.hardware.bus`). Both protocols share the instruction set we use (PING, READ, WRITE,
REG_WRITE, ACTION, SYNC_READ, SYNC_WRITE): a sync read is answered by one status packet per servo, in the order
of the ids in the request.

Feetech: `FF FF id len inst params.. checksum`, len = params + 2, checksum = ~(id + len + inst + params) & 0xFF;
status packets carry an error byte (bit 0 voltage, 1 angle sensor, 2 overheat, 3 over-current, 5 overload).
Dynamixel 2.0: `FF FF FD 00 id lenL lenH inst params.. crcL crcH`, len = params + 3, CRC-16 (poly 0x8005) over
everything before it, and byte stuffing (`FF FF FD` inside the payload gets an extra `FD`); status packets are
instruction 0x55 with an error byte (bit 7 hardware alert, bits 0-6 a result code).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PING, READ, WRITE, REG_WRITE, ACTION, SYNC_READ, SYNC_WRITE = 0x01, 0x02, 0x03, 0x04, 0x05, 0x82, 0x83
FEETECH_FLAGS = {0x01: "input voltage", 0x02: "angle sensor", 0x04: "overheat", 0x08: "over-current", 0x20: "overload"}
DYNAMIXEL_RESULTS = {1: "result fail", 2: "instruction error", 3: "CRC error", 4: "data range error",
                     5: "data length error", 6: "data limit error", 7: "access error"}  # fmt: skip


@dataclass(frozen=True)
class Status:
    id: int
    error: int
    params: bytes


class Incomplete(Exception):
    """More bytes are needed to finish the packet at the start of the buffer."""


class Garbage(Exception):
    """The buffer does not start with a valid packet; `skip` bytes can be dropped."""

    def __init__(self, reason: str, skip: int):
        super().__init__(reason)
        self.skip = skip


class Protocol:
    name = ""
    header = b""
    broadcast_id = 0xFE
    ping_reply_size = 0  # parameter bytes in a ping's status packet
    big_endian = False

    def instruction(self, servo_id: int, inst: int, params: bytes = b"") -> bytes:
        raise NotImplementedError

    def parse(self, buf: bytes | bytearray) -> tuple[Status, int]:
        """The packet at the start of `buf` and its length; raises `Incomplete` or `Garbage`."""
        raise NotImplementedError

    def parse_instruction(self, buf: bytes | bytearray) -> tuple[Status, int]:
        """Servo side: the instruction packet at the start of `buf` (`Status.error` holds the instruction)."""
        raise NotImplementedError

    def status(self, servo_id: int, error: int, params: bytes = b"") -> bytes:
        """Servo side: a status packet."""
        raise NotImplementedError

    def status_size(self, n_params: int) -> int:
        """Bytes on the wire of a status packet with `n_params` parameter bytes (before any stuffing)."""
        raise NotImplementedError

    def parse_block(self, buf: bytes | bytearray, ids: list[int], n_params: int) -> dict[int, Status] | None:
        """One status packet per id, in order, filling `buf` exactly (the usual reply to a sync read); None if
        `buf` is anything else."""
        size = self.status_size(n_params)
        if len(buf) != size * len(ids):
            return None
        got = {}
        for k, servo_id in enumerate(ids):
            try:
                status, used = self.parse(buf[k * size : (k + 1) * size])
            except (Incomplete, Garbage):
                return None
            if used != size or status.id != servo_id or len(status.params) != n_params:
                return None
            got[servo_id] = status
        return got

    def error_flags(self, error: int) -> tuple[str, ...]:
        raise NotImplementedError

    # -- values and parameter blocks --------------------------------------------------------------------------
    def pack(self, value: int, size: int) -> bytes:
        return int(value).to_bytes(size, "big" if self.big_endian else "little")

    def unpack(self, data: bytes) -> int:
        return int.from_bytes(data, "big" if self.big_endian else "little")

    def address(self, address: int) -> bytes:
        raise NotImplementedError

    def length(self, size: int) -> bytes:
        raise NotImplementedError

    def read_params(self, address: int, size: int) -> bytes:
        return self.address(address) + self.length(size)

    def write_params(self, address: int, data: bytes) -> bytes:
        return self.address(address) + data

    def sync_read_params(self, address: int, size: int, ids: Iterable[int]) -> bytes:
        return self.address(address) + self.length(size) + bytes(ids)

    def sync_write_params(self, address: int, size: int, data: dict[int, bytes]) -> bytes:
        return self.address(address) + self.length(size) + b"".join(bytes([i]) + d for i, d in data.items())


class FeetechProtocol(Protocol):
    """Feetech SCS/STS ("protocol 0"; `big_endian=True` for the SCS series)."""

    name = "feetech"
    header = b"\xff\xff"

    def __init__(self, big_endian: bool = False):
        self.big_endian = big_endian

    @staticmethod
    def checksum(body: bytes | bytearray) -> int:
        return ~sum(body) & 0xFF

    def _packet(self, servo_id: int, code: int, params: bytes) -> bytes:
        if len(params) > 250:
            raise ValueError(f"{len(params)} parameter bytes do not fit one Feetech packet")
        body = bytes([servo_id, len(params) + 2, code]) + params
        return b"\xff\xff" + body + bytes([self.checksum(body)])

    def instruction(self, servo_id: int, inst: int, params: bytes = b"") -> bytes:
        return self._packet(servo_id, inst, params)

    def status(self, servo_id: int, error: int, params: bytes = b"") -> bytes:
        return self._packet(servo_id, error, params)

    def status_size(self, n_params: int) -> int:
        return 6 + n_params

    def parse_block(self, buf: bytes | bytearray, ids: list[int], n_params: int) -> dict[int, Status] | None:
        size = 6 + n_params  # the same checks as `parse`, without its search for the header: this runs every tick
        if len(buf) != size * len(ids):
            return None
        got = {}
        for k, servo_id in enumerate(ids):
            o = k * size
            if buf[o] != 0xFF or buf[o + 1] != 0xFF or buf[o + 2] != servo_id or buf[o + 3] != n_params + 2:
                return None
            if ~sum(buf[o + 2 : o + size - 1]) & 0xFF != buf[o + size - 1]:
                return None
            got[servo_id] = Status(servo_id, buf[o + 4], bytes(buf[o + 5 : o + size - 1]))
        return got

    def _parse(self, buf: bytes | bytearray) -> tuple[Status, int]:
        start = buf.find(b"\xff\xff")
        if start != 0:
            if start < 0:
                skip = len(buf) - 1 if buf.endswith(b"\xff") else len(buf)
                if skip == 0:
                    raise Incomplete
                raise Garbage("no header", skip)
            raise Garbage("bytes before the header", start)
        if len(buf) < 4:
            raise Incomplete
        servo_id, length = buf[2], buf[3]
        if servo_id == 0xFF or length < 2:
            raise Garbage(f"bad id {servo_id} or length {length}", 1)
        total = 4 + length
        if len(buf) < total:
            raise Incomplete
        if buf[total - 1] != self.checksum(buf[2 : total - 1]):
            raise Garbage("checksum mismatch", 1)
        return Status(servo_id, buf[4], bytes(buf[5 : total - 1])), total

    parse = _parse
    parse_instruction = _parse

    def error_flags(self, error: int) -> tuple[str, ...]:
        flags = tuple(name for bit, name in FEETECH_FLAGS.items() if error & bit)
        unknown = error & ~sum(FEETECH_FLAGS)
        return flags + ((f"unknown bits 0x{unknown:02x}",) if unknown else ())

    def address(self, address: int) -> bytes:
        return bytes([address])

    def length(self, size: int) -> bytes:
        return bytes([size])


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


CRC_TABLE = _crc_table()


class DynamixelProtocol(Protocol):
    """Dynamixel protocol 2.0 (X series)."""

    name = "dynamixel"
    header = b"\xff\xff\xfd\x00"
    STATUS = 0x55
    ping_reply_size = 3  # model number (2) and firmware version (1)

    @staticmethod
    def crc(data: bytes | bytearray) -> int:
        crc = 0
        for byte in data:
            crc = ((crc << 8) ^ CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]) & 0xFFFF
        return crc

    @staticmethod
    def stuff(payload: bytes, before: bytes) -> bytes:
        """Insert `FD` after every `FF FF FD` in `payload` (`before`: the two bytes preceding it in the packet)."""
        out = bytearray()
        window = bytearray(before)
        for byte in payload:
            out.append(byte)
            if byte == 0xFD and window[-2:] == b"\xff\xff":
                out.append(0xFD)
            window.append(byte)
        return bytes(out)

    @staticmethod
    def unstuff(payload: bytes | bytearray, before: bytes) -> bytes:
        out = bytearray()
        window = bytearray(before)
        skip = False
        for i, byte in enumerate(payload):
            if skip:
                skip = False
                window.append(byte)
                continue
            out.append(byte)
            if byte == 0xFD and window[-2:] == b"\xff\xff" and i + 1 < len(payload) and payload[i + 1] == 0xFD:
                skip = True
            window.append(byte)
        return bytes(out)

    def _packet(self, servo_id: int, code: int, params: bytes) -> bytes:
        length = len(params) + 3
        before = length.to_bytes(2, "little")
        payload = self.stuff(bytes([code]) + params, before)
        head = self.header + bytes([servo_id]) + (len(payload) + 2).to_bytes(2, "little")
        packet = head + payload
        return packet + self.crc(packet).to_bytes(2, "little")

    def instruction(self, servo_id: int, inst: int, params: bytes = b"") -> bytes:
        return self._packet(servo_id, inst, params)

    def status(self, servo_id: int, error: int, params: bytes = b"") -> bytes:
        return self._packet(servo_id, self.STATUS, bytes([error]) + params)

    def status_size(self, n_params: int) -> int:
        return 11 + n_params

    def _parse_any(self, buf: bytes | bytearray) -> tuple[int, int, bytes, int]:
        start = buf.find(self.header)
        if start != 0:
            if start < 0:
                keep = max((k for k in range(1, 4) if buf.endswith(self.header[:k])), default=0)
                if len(buf) == keep:
                    raise Incomplete
                raise Garbage("no header", len(buf) - keep)
            raise Garbage("bytes before the header", start)
        if len(buf) < 8:
            raise Incomplete
        servo_id = buf[4]
        length = int.from_bytes(buf[5:7], "little")
        if servo_id == 0xFF or length < 3:
            raise Garbage(f"bad id {servo_id} or length {length}", 1)
        total = 7 + length
        if len(buf) < total:
            raise Incomplete
        if int.from_bytes(buf[total - 2 : total], "little") != self.crc(buf[: total - 2]):
            raise Garbage("CRC mismatch", 1)
        payload = self.unstuff(buf[7 : total - 2], bytes(buf[5:7]))
        return servo_id, payload[0], payload[1:], total

    def parse(self, buf: bytes | bytearray) -> tuple[Status, int]:
        servo_id, code, rest, total = self._parse_any(buf)
        if code != self.STATUS or not rest:
            raise Garbage(f"not a status packet (instruction 0x{code:02x})", total)
        return Status(servo_id, rest[0], rest[1:]), total

    def parse_instruction(self, buf: bytes | bytearray) -> tuple[Status, int]:
        servo_id, code, rest, total = self._parse_any(buf)
        return Status(servo_id, code, rest), total

    def error_flags(self, error: int) -> tuple[str, ...]:
        flags = ("hardware alert (read Hardware_Error_Status)",) if error & 0x80 else ()
        code = error & 0x7F
        return flags + ((DYNAMIXEL_RESULTS.get(code, f"result code {code}"),) if code else ())

    def address(self, address: int) -> bytes:
        return address.to_bytes(2, "little")

    def length(self, size: int) -> bytes:
        return size.to_bytes(2, "little")


def protocol_for(vendor: str) -> Protocol:
    if vendor == "feetech":
        return FeetechProtocol()
    if vendor == "dynamixel":
        return DynamixelProtocol()
    raise ValueError(f"unknown servo vendor '{vendor}' (feetech or dynamixel)")
