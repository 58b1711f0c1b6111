"""`PolicyServer`: serves a `ChunkPolicy` over TCP to `RemotePolicy` clients (the robot computer needs no GPU).

One thread per client (up to `max_clients`, at most `max_per_host` of them from one machine); the policy itself
is called by one thread at a time under a lock, so a policy need not be thread-safe. The wire format is
`vla.runtime.messages`; the session is

    client: hello(token)  ->  server: spec          (or error + close: wrong version, wrong token, too slow)
    client: infer(seq)    ->  server: actions(seq)  (repeated; reset(seq) -> reset_ok(seq) likewise)

Notable features:
- Binds to 127.0.0.1 unless told otherwise, and warns when it listens on another address without a token.
  The token is compared in constant time (of equal-length digests). Traffic is not encrypted: across an untrusted
  network, tunnel it (ssh -L) or use a VPN.
- Every protocol violation (garbage, oversized or truncated frames, wrong version or types, an observation that
  does not match the spec, NaN) gets an `error` reply where the socket still allows one, then that client is
  disconnected; other clients are unaffected. Before the hello, frames are capped at 64 KiB.
- Timeouts at every read: the hello must arrive within `handshake_timeout`; once a frame has started, the rest of
  it within `frame_timeout`; an idle client is dropped after `idle_timeout` (the client reconnects by itself).
  TCP keepalive also detects a peer whose machine vanished.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from vla.runtime.framing import recv_frame, send_message, tune_socket
from vla.runtime.messages import (
    DEFAULT_MAX_FRAME,
    HANDSHAKE_MAX_FRAME,
    Error,
    ErrorCode,
    FrameTimeout,
    FrameTooLarge,
    Hello,
    InferReply,
    InferRequest,
    Message,
    PeerClosed,
    PolicyFailed,
    ProtocolError,
    Reset,
    ResetDone,
    SpecMessage,
    Unauthorized,
    UnexpectedMessage,
    check_actions,
    check_observation,
    decode,
)
from vla.runtime.policy import ChunkPolicy

log = logging.getLogger(__name__)

DEFAULT_PORT = 8765
ERROR_SEND_TIMEOUT = 1.0  # a client that does not read its error reply is not waited for longer than this
DRAIN_LIMIT = 1 << 20  # after an error, discard at most this much of what the client still sends before closing


class _HandshakeTimeout(ProtocolError):
    code = ErrorCode.TIMEOUT


class PolicyServer:
    """Serve `policy` on `host:port` (port 0 picks a free one: read `address` after `start()`).

    Use as a context manager or call `start()` / `close()`; `serve_forever()` blocks until Ctrl-C or `close()`.
    """

    def __init__(
        self,
        policy: ChunkPolicy,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        token: str | None = None,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        handshake_timeout: float = 5.0,
        frame_timeout: float = 10.0,
        idle_timeout: float | None = 300.0,
        first_request_timeout: float = 10.0,
        max_clients: int = 8,
        max_per_host: int | None = None,
    ):
        if token is not None and not token.strip():
            raise ValueError("PolicyServer token is empty; pass None for no token or a non-empty secret")
        if max_frame < HANDSHAKE_MAX_FRAME:
            raise ValueError(f"max_frame={max_frame} is below the {HANDSHAKE_MAX_FRAME}-byte handshake limit")
        self.policy, self.host, self.port = policy, host, port
        self.max_frame, self.max_clients = max_frame, max_clients
        # one machine may hold at most this many slots (default: all but one), so a host that opens connections in
        # a loop leaves a slot for everyone else; 127.0.0.1 counts as one host like any other
        self.max_per_host = max(1, max_clients - 1) if max_per_host is None else max_per_host
        if self.max_per_host < 1:
            raise ValueError(f"max_per_host must be >= 1, got {max_per_host}")
        self.handshake_timeout, self.frame_timeout, self.idle_timeout = handshake_timeout, frame_timeout, idle_timeout
        # a client that said hello must ask for something this soon, or its slot goes to the next: otherwise a few
        # silent connections hold every slot until the idle timeout
        self.first_request_timeout = first_request_timeout
        self._token_digest = None if token is None else _digest(token)
        self._policy_lock = threading.Lock()
        self._clients: dict[socket.socket, str] = {}
        self._threads: set[threading.Thread] = set()  # client threads, joined by close()
        self._clients_lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self.requests = 0  # infer requests answered
        self.rejected = 0  # clients disconnected for a protocol violation

    # ---- lifecycle ------------------------------------------------------------------------------------------------

    def start(self) -> PolicyServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            self._listener = socket.create_server((self.host, self.port), family=family, backlog=16)
        except OSError as err:
            raise OSError(f"policy server cannot listen on {self.host}:{self.port}: {err.strerror or err}. "
                          "Is another server using the port? Pick another with --port.") from err  # fmt: skip
        self._listener.settimeout(0.25)  # so the accept loop notices close()
        self.port = self._listener.getsockname()[1]
        if not _is_loopback(self.host):
            if self._token_digest is None:
                log.warning(
                    "policy server listens on %s (not a loopback address) WITHOUT A TOKEN: anyone who can reach "
                    "port %d can query the policy. Pass --token-file (RemotePolicy(token=...)), or bind to "
                    "127.0.0.1 and reach it through an SSH tunnel.", self.host, self.port,
                )  # fmt: skip
            else:
                log.info("policy server listens on %s; traffic is not encrypted, use a trusted network", self.host)
        self._accept_thread = threading.Thread(target=self._accept_loop, name="policy-server-accept", daemon=True)
        self._accept_thread.start()
        spec = self.policy.spec
        log.info("serving %s on %s (chunk %d, %d actions, cameras %s)", type(self.policy).__name__, self.url,
                 spec.chunk_size, len(spec.action_names), dict(spec.cameras))  # fmt: skip
        return self

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    def serve_forever(self) -> None:
        if self._listener is None:
            self.start()
        try:
            while not self._stop.wait(0.5):
                pass
        finally:
            self.close()

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting; each client's thread finishes the request in progress, says goodbye (a `shutdown` error)
        and closes. Waits up to `timeout` s for the threads: a process that exits while one of them is inside the
        policy (torch) can abort instead of exiting."""
        self._stop.set()
        if self._listener is not None:
            _shutdown(self._listener)  # wakes the accept() in progress (Linux)
            self._listener.close()
        if self._accept_thread is not None and self._accept_thread is not threading.current_thread():
            self._accept_thread.join(timeout=2.0)
        with self._clients_lock:
            clients, threads = list(self._clients), list(self._threads)
        for conn in clients:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RD)  # wakes a thread waiting for the next request; it still may write
        deadline = time.monotonic() + timeout
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(deadline - time.monotonic(), 0.0))

    def __enter__(self) -> PolicyServer:
        return self.start() if self._listener is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- connections ----------------------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:  # listener closed
                break
            peer = f"{addr[0]}:{addr[1]}"
            tune_socket(conn)
            with self._clients_lock:
                from_host = sum(p.rpartition(":")[0] == addr[0] for p in self._clients.values())
                refusal = (f"server already has {self.max_clients} clients" if len(self._clients) >= self.max_clients
                           else f"{addr[0]} already holds {from_host} of the server's slots (max_per_host)"
                           if from_host >= self.max_per_host else None)  # fmt: skip
                if refusal is None:
                    self._clients[conn] = peer
            if refusal is not None:  # answered in a thread too: the reply may take up to ERROR_SEND_TIMEOUT
                log.warning("refused %s: %s", peer, refusal)
                work: Callable[[], None] = functools.partial(self._reject, conn, peer, Error(ErrorCode.BUSY, refusal))
            else:
                work = functools.partial(self._serve_client, conn, peer)
            thread = threading.Thread(target=self._run_client, args=(work,), name=f"policy-client-{peer}", daemon=True)
            with self._clients_lock:
                self._threads.add(thread)
            thread.start()

    def _run_client(self, work: Callable[[], None]) -> None:
        try:
            work()
        finally:
            with self._clients_lock:
                self._threads.discard(threading.current_thread())

    def _serve_client(self, conn: socket.socket, peer: str) -> None:
        seq: int | None = None
        wait = self.idle_timeout
        try:
            self._handshake(conn, peer)
            first = True
            while not self._stop.is_set():
                seq = None
                wait = self.idle_timeout
                if first:
                    wait = self.first_request_timeout if wait is None else min(wait, self.first_request_timeout)
                    first = False
                idle_deadline = None if wait is None else time.monotonic() + wait
                msg = decode(recv_frame(conn, self.max_frame, idle_deadline, self.frame_timeout))
                seq = getattr(msg, "seq", None)
                send_message(conn, self._answer(msg, peer), time.monotonic() + self.frame_timeout)
        except ProtocolError as err:
            log.warning("client %s: %s (%s); disconnecting it", peer, err, err.code)
            self._reject(conn, peer, Error(err.code, str(err), seq))
        except FrameTimeout as err:
            if err.mid_frame:
                log.warning("client %s stalled part-way through a frame; disconnecting it", peer)
                self._reject(conn, peer, Error(ErrorCode.TIMEOUT, f"frame not completed within {self.frame_timeout} s"))
            else:
                log.info("client %s silent for %s s; disconnecting it", peer, wait)
        except PeerClosed as err:
            (log.warning if err.mid_frame else log.info)("client %s: %s", peer, err)
        except OSError as err:
            log.info("client %s: connection lost (%s)", peer, err)
        except Exception:  # a bug, not the client's doing: this client goes, the server stays
            log.exception("client %s: unexpected error; disconnecting it", peer)
        finally:
            if self._stop.is_set():  # goodbye: this thread is the socket's only writer
                with contextlib.suppress(OSError):
                    send_message(conn, Error(ErrorCode.SHUTDOWN, "the policy server is stopping"),
                                 time.monotonic() + ERROR_SEND_TIMEOUT)  # fmt: skip
            with self._clients_lock:
                self._clients.pop(conn, None)
            conn.close()

    def _handshake(self, conn: socket.socket, peer: str) -> None:
        deadline = time.monotonic() + self.handshake_timeout
        try:
            hello = decode(recv_frame(conn, HANDSHAKE_MAX_FRAME, deadline))
        except FrameTimeout:
            raise _HandshakeTimeout(f"no hello within {self.handshake_timeout} s of connecting") from None
        except FrameTooLarge:
            raise FrameTooLarge(
                f"the first frame announced more than the {HANDSHAKE_MAX_FRAME} bytes a hello may take: is the "
                "client a vla RemotePolicy? (this port speaks only the vla policy protocol, not HTTP)"
            ) from None
        if not isinstance(hello, Hello):
            raise UnexpectedMessage(f"the first message must be hello, got {type(hello).__name__}")
        if self._token_digest is not None and (
            hello.token is None or not hmac.compare_digest(_digest(hello.token), self._token_digest)
        ):
            raise Unauthorized("missing token" if hello.token is None else "wrong token")
        send_message(conn, SpecMessage(self.policy.spec, self.max_frame), time.monotonic() + self.frame_timeout)
        log.info("client %s connected (%r)", peer, hello.client)

    def _answer(self, msg: Message, peer: str) -> Message:
        if isinstance(msg, InferRequest):
            check_observation(msg.obs, self.policy.spec)
            actions, compute_s, wait_s = self._call(self.policy.infer, msg.obs)
            actions = check_actions(actions, self.policy.spec)
            with self._clients_lock:
                self.requests += 1
            log.info("infer seq=%d from %s: policy %.2f ms (waited %.2f ms for the policy lock)", msg.seq, peer,
                     compute_s * 1e3, wait_s * 1e3)  # fmt: skip
            return InferReply(msg.seq, msg.sent, actions, compute_s)
        if isinstance(msg, Reset):
            self._call(self.policy.reset)
            log.info("reset from %s", peer)
            return ResetDone(msg.seq)
        raise UnexpectedMessage(f"expected infer or reset, got {type(msg).__name__}")

    def _call(self, fn: Any, *args: Any) -> tuple[Any, float, float]:
        """fn(*args) under the policy lock -> (result, seconds in fn, seconds waiting for the lock)."""
        t0 = time.perf_counter()
        with self._policy_lock:
            t1 = time.perf_counter()
            try:
                result = fn(*args)
            except Exception as err:
                log.exception("policy %s raised", getattr(fn, "__name__", fn))
                raise PolicyFailed(f"the policy raised {type(err).__name__}: {err}"[:2000]) from err
            return result, time.perf_counter() - t1, t1 - t0

    def _reject(self, conn: socket.socket, peer: str, error: Error) -> None:
        """Send `error` if the socket takes it, then close politely: stop sending, discard what the client still
        sends (so the kernel does not reset the connection and destroy the error reply before it is read)."""
        with self._clients_lock:
            self.rejected += error.code != ErrorCode.BUSY
        try:
            send_message(conn, error, time.monotonic() + ERROR_SEND_TIMEOUT)
            conn.shutdown(socket.SHUT_WR)
            deadline, drained = time.monotonic() + ERROR_SEND_TIMEOUT, 0
            while drained < DRAIN_LIMIT and (left := deadline - time.monotonic()) > 0:
                conn.settimeout(left)
                chunk = conn.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError as err:  # includes timeouts: the reply is best effort
            log.debug("client %s: error reply not delivered (%s)", peer, err)
        finally:
            conn.close()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _is_loopback(host: str) -> bool:
    if not host:  # "" means every interface
        return False
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
        return all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses)
    except (OSError, ValueError):
        return False


def _shutdown(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
