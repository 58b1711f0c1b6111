"""Frames on a socket: a 4-byte big-endian payload length, then the payload (one `vla.runtime.messages` message).

`recv_frame` refuses an oversized length prefix before reading (or allocating) the payload, and separates the
wait for a frame's first byte (idle) from the time allowed for the rest of it (a stalled sender).
"""

from __future__ import annotations

import socket
import struct
import time

from vla.runtime.messages import FrameTimeout, FrameTooLarge, MalformedMessage, Message, PeerClosed, encode

HEADER = struct.Struct(">I")


def send_message(sock: socket.socket, msg: Message, deadline: float | None = None) -> None:
    """Encode and send one frame; `deadline` is a `time.monotonic()` time (None: block)."""
    send_payload(sock, encode(msg), deadline)


def send_payload(sock: socket.socket, payload: bytes, deadline: float | None = None) -> None:
    """Send one already encoded frame. After a timeout part of it may have gone: close the socket."""
    sock.settimeout(None if deadline is None else max(deadline - time.monotonic(), 1e-6))
    sock.sendall(HEADER.pack(len(payload)) + payload)


def tune_socket(sock: socket.socket) -> None:
    """No Nagle delay (a small frame would wait up to 40 ms for an ACK); keepalive probes find a vanished peer."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def recv_frame(sock: socket.socket, max_frame: int, deadline: float | None, frame_timeout: float | None = None
               ) -> bytearray:  # fmt: skip
    """One frame's payload. The first byte must arrive by `deadline` (monotonic; None: wait forever); the rest of
    the frame by `frame_timeout` seconds after it (None: by `deadline`). The length is checked against `max_frame`
    before the payload is read. Raises `FrameTimeout`, `PeerClosed`, `FrameTooLarge` or `MalformedMessage`."""
    header = bytearray(HEADER.size)
    _recv_into(sock, memoryview(header)[:1], deadline, mid_frame=False)
    frame_deadline = deadline if frame_timeout is None else time.monotonic() + frame_timeout
    _recv_into(sock, memoryview(header)[1:], frame_deadline, mid_frame=True)
    (length,) = HEADER.unpack(header)
    if length > max_frame:
        raise FrameTooLarge(f"frame of {length} bytes announced, the limit is {max_frame} bytes "
                            "(raise max_frame on both ends if the observations really are this large)")  # fmt: skip
    if length == 0:
        raise MalformedMessage("empty frame")
    payload = bytearray(length)
    _recv_into(sock, memoryview(payload), frame_deadline, mid_frame=True)
    return payload


def _recv_into(sock: socket.socket, view: memoryview, deadline: float | None, mid_frame: bool) -> None:
    got = 0
    while got < len(view):
        if deadline is None:
            sock.settimeout(None)
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FrameTimeout("timed out waiting for a frame", mid_frame=mid_frame or got > 0)
            sock.settimeout(remaining)
        try:
            n = sock.recv_into(view[got:])
        except TimeoutError:
            raise FrameTimeout("timed out waiting for a frame", mid_frame=mid_frame or got > 0) from None
        if n == 0:
            raise PeerClosed("connection closed" + (" part-way through a frame" if mid_frame or got else ""),
                             mid_frame=mid_frame or got > 0)  # fmt: skip
        got += n
