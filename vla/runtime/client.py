"""`RemotePolicy`: a `ChunkPolicy` whose network runs in a `PolicyServer` on another machine (numpy + msgpack only).

The robot side uses it exactly like a local policy (`spec`, `reset()`, `infer(obs)`). What differs is failure:

    PolicyUnavailable  no answer within `timeout` (server slow, killed, unreachable, connection lost, garbled
                       reply). Raised promptly; the next call reconnects, so a loop can fall back to its watchdog
                       behaviour and carry on when the server is back.
    RequestRejected    the server answered with an error (wrong token, protocol version, observation not matching
                       the spec, the policy raised). `code` says which; retrying the same request will not help.
    SpecChanged        after a reconnect the server serves a policy with a different spec: refuse, never guess.
    InvalidObservation (from vla.runtime.messages, raised before sending) the observation does not fit `spec`.

Notable features:
- Every call has one deadline (`timeout` seconds) covering reconnecting, sending and waiting; no call blocks past it.
  (The host name is resolved once, in the constructor: name lookups cannot be given a timeout.)
- Requests carry sequence numbers. After a timeout the connection is kept, and a late reply to the old request
  that arrives while waiting for a newer one is discarded (counted in `stale_replies`), never returned.
- Before reusing a connection it checks that the server has not closed it (e.g. for idleness) and reconnects
  first, so a quiet period does not cost a failed request.
- `latency()` summarises measured round trips; `last_compute_s` is the server's own policy time, so network and
  queueing overhead is `last_rtt_s - last_compute_s`.
"""

from __future__ import annotations

import collections
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

import numpy as np

from vla.runtime.framing import HEADER, recv_frame, send_payload, tune_socket
from vla.runtime.messages import (
    DEFAULT_MAX_FRAME,
    Error,
    ErrorCode,
    FrameTimeout,
    FrameTooLarge,
    Hello,
    InferReply,
    InferRequest,
    Message,
    PeerClosed,
    ProtocolError,
    Reset,
    ResetDone,
    SpecMessage,
    check_actions,
    check_observation,
    decode,
    encode,
)
from vla.runtime.policy import PolicySpec, RequestObservation

Reply = TypeVar("Reply", InferReply, ResetDone)


class RemotePolicyError(RuntimeError):
    """Base of the errors `RemotePolicy` raises for the server's part; a control loop catches this to degrade."""


class PolicyUnavailable(RemotePolicyError):
    """No usable answer within the timeout. Transient: the next call reconnects."""


class RequestRejected(RemotePolicyError):
    """The server refused the request (or the handshake). `code` is a `messages.ErrorCode` value."""

    def __init__(self, code: str, message: str):
        super().__init__(f"policy server refused the request ({code}): {message}")
        self.code = code


class SpecChanged(RemotePolicyError):
    """The server came back with a policy whose spec differs from the one this client started with."""


@dataclass(frozen=True)
class Latency:
    """Round trips of the last `count` answered requests, in seconds."""

    count: int
    last: float
    p50: float
    p99: float
    max: float


class RemotePolicy:
    """Connect to a `PolicyServer` at `url` ("tcp://host:port") and serve as its local `ChunkPolicy` stand-in.

    Connects in the constructor (within `connect_timeout`) to learn the server's spec; raises `PolicyUnavailable`
    if it cannot, `RequestRejected` on a wrong token or protocol version. `timeout` bounds each later call.
    """

    def __init__(
        self,
        url: str = "tcp://127.0.0.1:8765",
        token: str | None = None,
        timeout: float = 1.0,
        *,
        connect_timeout: float = 5.0,
        max_frame: int = DEFAULT_MAX_FRAME,
        name: str = "",
        history: int = 1000,
    ):
        self.url, self.host, self.port = url, *parse_url(url)
        self.token, self.timeout, self.max_frame, self.name = token, timeout, max_frame, name
        self.server_max_frame = DEFAULT_MAX_FRAME
        self.last_rtt_s: float | None = None
        self.last_compute_s: float | None = None
        self.stale_replies = 0  # late replies to requests that had timed out, discarded
        self.reconnects = 0
        self._rtts: collections.deque[float] = collections.deque(maxlen=history)
        self._sock: socket.socket | None = None
        self._seq = 0
        self._lock = threading.Lock()
        self._spec: PolicySpec | None = None
        try:  # once: name lookups take no timeout, so later reconnects must not need one
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except OSError as err:
            raise PolicyUnavailable(f"cannot resolve the policy server's host {self.host!r}: {err}") from None
        self._addresses = [(family, address) for family, _, _, _, address in infos]
        with self._lock:
            self._connect(time.monotonic() + connect_timeout)
        assert self._spec is not None
        self.spec: PolicySpec = self._spec

    # ---- ChunkPolicy ----------------------------------------------------------------------------------------------

    def infer(self, obs: RequestObservation) -> np.ndarray:
        """(chunk_size, A) float32 actions from the server, or a `RemotePolicyError` within `timeout` seconds."""
        check_observation(obs, self.spec)
        start = time.monotonic()
        reply = self._request(lambda seq: InferRequest(seq, time.monotonic(), obs), InferReply, start)
        try:
            actions = check_actions(reply.actions, self.spec)
        except ProtocolError as err:
            self._close()
            raise PolicyUnavailable(f"policy server at {self.url} sent an invalid chunk: {err}") from None
        rtt = time.monotonic() - reply.sent
        self.last_rtt_s, self.last_compute_s = rtt, reply.compute_s
        self._rtts.append(rtt)
        return actions

    def reset(self) -> None:
        self._request(Reset, ResetDone, time.monotonic())

    # ---- other public ---------------------------------------------------------------------------------------------

    def latency(self) -> Latency:
        """Summary of the recorded round trips (send to reply, including the server's compute time)."""
        if not self._rtts:
            raise ValueError("no round trip measured yet: call infer() first")
        rtts = np.asarray(self._rtts)
        p50, p99 = np.percentile(rtts, [50, 99])
        return Latency(len(rtts), float(rtts[-1]), float(p50), float(p99), float(rtts.max()))

    def close(self) -> None:
        with self._lock:
            self._close()

    def __enter__(self) -> RemotePolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internals ------------------------------------------------------------------------------------------------

    def _request(self, make: Callable[[int], Message], expect: type[Reply], start: float) -> Reply:
        deadline = start + self.timeout
        if not self._lock.acquire(timeout=max(self.timeout, 0.0)):
            raise PolicyUnavailable(f"another call to the policy at {self.url} is still waiting")
        try:
            if self._sock is None or _dropped(self._sock):
                self._close()
                self._connect(deadline)
                self.reconnects += 1
            self._seq += 1
            payload = encode(make(self._seq))
            if len(payload) > self.server_max_frame:
                raise FrameTooLarge(f"request of {len(payload)} bytes exceeds the server's {self.server_max_frame}-"
                                    "byte frame limit (start the server with a larger --max-frame-mib)")  # fmt: skip
            assert self._sock is not None
            try:
                send_payload(self._sock, payload, deadline)
            except OSError as err:  # part of the frame may have gone: this stream is unusable
                self._close()
                raise PolicyUnavailable(f"could not send to the policy server at {self.url}: {err}") from None
            return self._await(self._seq, expect, deadline)
        finally:
            self._lock.release()

    def _await(self, seq: int, expect: type[Reply], deadline: float) -> Reply:
        assert self._sock is not None
        while True:
            try:
                msg = decode(recv_frame(self._sock, self.max_frame, deadline))
            except FrameTimeout as err:
                if err.mid_frame:
                    self._close()
                raise PolicyUnavailable(f"no reply from the policy server at {self.url} within {self.timeout} s"
                                        ) from None  # fmt: skip
            except (OSError, ProtocolError) as err:
                self._close()
                raise PolicyUnavailable(f"lost the policy server at {self.url}: {err}") from None
            got = getattr(msg, "seq", None)
            if got is not None and got < seq:
                self.stale_replies += 1
                continue
            if isinstance(msg, Error):
                self._close()  # the server closes after every error
                raise _refusal(msg)
            if not isinstance(msg, expect) or got != seq:
                self._close()
                raise PolicyUnavailable(f"policy server at {self.url} sent {type(msg).__name__} seq={got} "
                                        f"while waiting for {expect.__name__} seq={seq}")  # fmt: skip
            return msg

    def _connect(self, deadline: float) -> None:
        """Open a connection, say hello and check the server's version and spec (lock held)."""
        sock = self._open(deadline)
        try:
            tune_socket(sock)
            send_payload(sock, encode(Hello(self.token, self.name or socket.gethostname())), deadline)
            reply = decode(recv_frame(sock, self.max_frame, deadline))
        except ProtocolError as err:  # e.g. the server speaks another version
            sock.close()
            raise RequestRejected(err.code, str(err)) from None
        except (OSError, FrameTimeout, PeerClosed) as err:
            sock.close()
            raise PolicyUnavailable(f"policy server at {self.url} did not complete the handshake: {err}") from None
        if isinstance(reply, Error):
            sock.close()
            raise _refusal(reply)
        if not isinstance(reply, SpecMessage):
            sock.close()
            raise RequestRejected(ErrorCode.UNEXPECTED, f"expected the server's spec, got {type(reply).__name__}")
        if self._spec is not None and reply.spec != self._spec:
            sock.close()
            raise SpecChanged(f"the policy server at {self.url} now serves {reply.spec}, but this client started "
                              f"with {self._spec}; create a new RemotePolicy if the change is intended")  # fmt: skip
        self._spec, self.server_max_frame, self._sock = reply.spec, reply.max_frame, sock

    def _open(self, deadline: float) -> socket.socket:
        """A TCP connection to the first of the server's addresses that accepts (e.g. ::1, then 127.0.0.1)."""
        errors = []
        for family, address in self._addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(max(deadline - time.monotonic(), 1e-3))
                sock.connect(address)
                return sock
            except OSError as err:
                sock.close()
                errors.append(f"{address[0]}: {err}")
        raise PolicyUnavailable(f"cannot connect to the policy server at {self.url} ({'; '.join(errors)})")

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def parse_url(url: str) -> tuple[str, int]:
    """("host", port) from "tcp://host:port" (IPv6: "tcp://[::1]:8765")."""
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tcp" or not parts.hostname or port is None:
        raise ValueError(f"policy server URL must look like tcp://HOST:PORT, got {url!r}")
    return parts.hostname, port


def _refusal(error: Error) -> RemotePolicyError:
    """The exception for an error reply: a server that is full or timed us out may answer next time."""
    if error.code in (ErrorCode.BUSY, ErrorCode.TIMEOUT, ErrorCode.SHUTDOWN):
        return PolicyUnavailable(f"policy server refused the request ({error.code}): {error.message}")
    return RequestRejected(error.code, error.message)


def _dropped(sock: socket.socket) -> bool:
    """True if the server has closed this connection (readable with nothing to read) or said goodbye (a pending
    `shutdown` error: it is stopping, and a server started in its place needs a new connection). A pending stale
    reply is left where it is."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        pending = sock.recv(4096, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    if not pending:
        return True
    (length,) = HEADER.unpack_from(pending) if len(pending) >= HEADER.size else (None,)
    if length is None or len(pending) < HEADER.size + length:
        return False  # not a whole small frame: a reply, not a goodbye
    try:
        message = decode(pending[HEADER.size : HEADER.size + length])
    except ProtocolError:
        return False
    return isinstance(message, Error) and message.code == ErrorCode.SHUTDOWN
