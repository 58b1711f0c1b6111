"""The policy server with real sockets on localhost: answers equal the local policy's, tokens, hostile clients."""

from __future__ import annotations

import inspect
import logging
import socket
import threading
import time
from collections.abc import Callable

import msgpack
import numpy as np
import pytest
from runtime_helpers import SPEC, RecordingPolicy, frame, make_obs, raw_connect, read_error

from vla.runtime.client import PolicyUnavailable, RemotePolicy, RequestRejected
from vla.runtime.framing import HEADER
from vla.runtime.messages import HANDSHAKE_MAX_FRAME, ErrorCode, pack_array
from vla.runtime.policy import ChunkPolicy, ScriptedPolicy
from vla.runtime.server import PolicyServer


def test_remote_answers_are_bit_identical_to_calling_the_policy_directly(server: PolicyServer) -> None:
    local = RecordingPolicy()
    remote: ChunkPolicy
    with RemotePolicy(f"tcp://localhost:{server.port}") as remote:
        assert remote.spec == SPEC
        for seed in range(5):
            obs = make_obs(seed=seed, task="stack the blocks" * seed)
            if seed % 2:
                obs.prefix, obs.delay = np.random.default_rng(seed).normal(size=(seed, 6)).astype(np.float32), 1
            got, want = remote.infer(obs), local.infer(obs)
            assert got.dtype == want.dtype == np.float32 and got.shape == want.shape == (50, 6)
            assert got.tobytes() == want.tobytes()


def test_images_of_the_spec_shapes_reach_the_policy_intact(server: PolicyServer, policy: RecordingPolicy) -> None:
    obs = make_obs(seed=3)
    obs.state = obs.state.astype(np.float64)  # float64 state travels as float64
    with RemotePolicy(server.url) as remote:
        remote.infer(obs)
    (received,) = policy.received
    assert received.images.keys() == obs.images.keys()
    for name, image in obs.images.items():
        got = received.images[name]
        assert got.dtype == np.uint8 and got.shape == (*SPEC.cameras[name], 3)
        assert np.array_equal(got, image)
    assert received.state.dtype == np.float64 and np.array_equal(received.state, obs.state)
    assert received.task == obs.task and received.prefix is None and received.delay == 0


def test_scripted_policy_served_and_reset(start_server: Callable[..., PolicyServer]) -> None:
    scripted = ScriptedPolicy(SPEC)
    server = start_server(scripted)
    with RemotePolicy(server.url) as remote:
        obs = make_obs()
        obs.prefix = np.full((50, 6), 7.0, np.float32)  # a full prefix: ScriptedPolicy returns it exactly
        assert np.array_equal(remote.infer(obs), obs.prefix)
        assert scripted.calls == 1
        remote.reset()
        assert scripted.calls == 0


def test_token_is_required_and_checked(start_server: Callable[..., PolicyServer], policy: RecordingPolicy) -> None:
    server = start_server(policy, token="correct horse battery staple")
    with RemotePolicy(server.url, token="correct horse battery staple") as remote:
        assert remote.infer(make_obs()).shape == (50, 6)
    for wrong, reason in [("correct horse battery stapler", "wrong token"), (None, "missing token")]:
        with pytest.raises(RequestRejected, match=reason) as err:
            RemotePolicy(server.url, token=wrong)
        assert err.value.code == ErrorCode.UNAUTHORIZED
    sock = raw_connect(server, hello=False)  # skipping the hello does not get past the token either
    sock.sendall(infer_frame())
    assert read_error(sock).code == ErrorCode.UNEXPECTED
    assert len(policy.received) == 1


def test_binds_to_loopback_by_default() -> None:
    assert inspect.signature(PolicyServer).parameters["host"].default == "127.0.0.1"
    with PolicyServer(RecordingPolicy(), port=0) as server:
        assert server._listener is not None and server._listener.getsockname()[0] == "127.0.0.1"
        assert server.url.startswith("tcp://127.0.0.1:")


BINDS = [("0.0.0.0", None, True), ("0.0.0.0", "t", False), ("127.0.0.1", None, False), ("localhost", None, False)]


@pytest.mark.parametrize(("host", "token", "warned"), BINDS)
def test_warns_when_listening_beyond_loopback_without_a_token(
    caplog: pytest.LogCaptureFixture, host: str, token: str | None, warned: bool
) -> None:
    with caplog.at_level(logging.WARNING, logger="vla.runtime.server"), PolicyServer(RecordingPolicy(), host, 0, token):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warnings) == warned, warnings
    if warned:
        assert "WITHOUT A TOKEN" in warnings[0] and "--token-file" in warnings[0]


def infer_frame(seq: int = 1, **obs_changes: object) -> bytes:
    obs = make_obs()
    body = {"state": pack_array(obs.state), "images": {k: pack_array(v) for k, v in obs.images.items()},
            "task": obs.task, "prefix": None, "delay": 0} | obs_changes  # fmt: skip
    return frame({"v": 1, "kind": "infer", "seq": seq, "sent": 0.0, "obs": body})


SHORT_STATE = {"dtype": "float32", "shape": [6], "data": bytes(20)}
NAN_STATE = pack_array(np.array([0, 1, np.nan, 3, 4, 5], np.float32))
BAD_IMAGE = {"front": pack_array(np.zeros((95, 96, 3), np.uint8)), "wrist": pack_array(np.zeros((48, 64, 3), np.uint8))}
HOSTILE = {
    # name: (say hello first, bytes to send, expected error code or None when no reply is possible)
    "garbage before hello": (False, b"\x00\x00\x00\x10" + bytes(range(16)), ErrorCode.MALFORMED),
    "http request": (False, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ErrorCode.TOO_LARGE),
    "huge length before hello": (False, HEADER.pack(HANDSHAKE_MAX_FRAME + 1), ErrorCode.TOO_LARGE),
    "huge length after hello": (True, HEADER.pack(2**32 - 1) + b"\x00" * 100, ErrorCode.TOO_LARGE),
    "empty frame": (True, HEADER.pack(0), ErrorCode.MALFORMED),
    "garbage after hello": (True, frame(b"\xc1\xc1\xc1"), ErrorCode.MALFORMED),
    "wrong version": (False, frame({"v": 99, "kind": "hello", "token": None, "client": ""}), ErrorCode.VERSION),
    "hello token of the wrong type": (False, frame({"v": 1, "kind": "hello", "token": 1, "client": ""}), "malformed"),
    "msgpack ext type": (True, frame({"v": 1, "kind": "reset", "seq": msgpack.ExtType(42, b"x")}), "malformed"),
    "seq of the wrong type": (True, infer_frame(seq="1"), ErrorCode.MALFORMED),  # type: ignore[arg-type]
    "pickle dtype": (True, infer_frame(state={"dtype": "|O", "shape": [1], "data": b"\x80"}), ErrorCode.MALFORMED),
    "buffer shorter than shape": (True, infer_frame(state=SHORT_STATE), ErrorCode.MALFORMED),
    "image shape not in spec": (True, infer_frame(images=BAD_IMAGE), ErrorCode.BAD_REQUEST),
    "nan in state": (True, infer_frame(state=NAN_STATE), ErrorCode.BAD_REQUEST),
    "state beyond float32": (True, infer_frame(state=pack_array(np.full(6, 1e300))), ErrorCode.BAD_REQUEST),
    "version true": (False, frame({"v": True, "kind": "hello", "token": None, "client": ""}), ErrorCode.VERSION),
    "version 1.0": (False, frame({"v": 1.0, "kind": "hello", "token": None, "client": ""}), ErrorCode.VERSION),
    "second hello": (True, frame({"v": 1, "kind": "hello", "token": None, "client": ""}), ErrorCode.UNEXPECTED),
    "reply kind from a client": (True, frame({"v": 1, "kind": "reset_ok", "seq": 1}), ErrorCode.UNEXPECTED),
    "truncated then closed": (True, HEADER.pack(1000) + b"\x81" * 10, None),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_client_is_refused_and_others_are_still_served(server: PolicyServer, case: str) -> None:
    hello, data, code = HOSTILE[case]
    with RemotePolicy(server.url) as bystander:  # connected before the attack, still served after it
        before = bystander.infer(make_obs())
        sock = raw_connect(server, hello=hello)
        sock.sendall(data)
        if code is None:
            sock.close()
        else:
            error = read_error(sock)
            assert error.code == code and error.message, error
        assert np.array_equal(bystander.infer(make_obs()), before)
    with RemotePolicy(server.url) as newcomer:
        assert np.array_equal(newcomer.infer(make_obs()), before)
    deadline = time.monotonic() + 2
    while server.rejected < (code is not None) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.rejected == (code is not None)


@pytest.mark.parametrize("hello", [False, True], ids=["silent before hello", "stalls mid-frame"])
def test_silent_or_stalled_client_is_timed_out(server: PolicyServer, hello: bool) -> None:
    sock = raw_connect(server, hello=hello)
    start = time.monotonic()
    if hello:
        sock.sendall(HEADER.pack(500) + b"\x80" * 20)  # the rest of the frame never comes
    error = read_error(sock, timeout=3)
    assert error.code == ErrorCode.TIMEOUT
    assert time.monotonic() - start < 0.5 + 0.5  # handshake_timeout / frame_timeout are 0.5 s in the fixture
    with RemotePolicy(server.url) as other:
        other.infer(make_obs())


def test_a_client_idle_past_the_idle_timeout_reconnects_transparently(
    start_server: Callable[..., PolicyServer],
) -> None:
    server = start_server(RecordingPolicy(), idle_timeout=0.2)
    with RemotePolicy(server.url) as remote:
        remote.infer(make_obs())
        time.sleep(0.5)  # the server drops the idle connection
        remote.infer(make_obs())
        assert remote.reconnects == 1


def test_policy_errors_reach_the_client_and_the_server_keeps_serving(
    server: PolicyServer, policy: RecordingPolicy
) -> None:
    with RemotePolicy(server.url) as remote:
        policy.fail = True
        with pytest.raises(RequestRejected, match="RuntimeError: CUDA out of memory") as err:
            remote.infer(make_obs())
        assert err.value.code == ErrorCode.POLICY_FAILED
        policy.fail = False
        assert remote.infer(make_obs()).shape == (50, 6)


def test_several_clients_each_get_their_own_answers(server: PolicyServer) -> None:
    local, failures = RecordingPolicy(), []

    def run(seed: int) -> None:
        with RemotePolicy(server.url) as remote:
            for i in range(15):
                obs = make_obs(seed=100 * seed + i)
                if not np.array_equal(remote.infer(obs), local.infer(obs)):
                    failures.append((seed, i))

    threads = [threading.Thread(target=run, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not failures and server.requests == 45


def test_one_host_cannot_take_every_slot(start_server: Callable[..., PolicyServer]) -> None:
    """Three slots, at most two per host: this machine's third connection is refused, naming the limit, while the
    server still has a free slot for another machine."""
    server = start_server(RecordingPolicy(), max_clients=3)
    assert server.max_per_host == 2
    with RemotePolicy(server.url) as first, RemotePolicy(server.url) as second:
        with pytest.raises(PolicyUnavailable, match=r"127\.0\.0\.1 already holds 2 of the server's slots"):
            RemotePolicy(server.url)
        first.infer(make_obs())
        second.infer(make_obs())
    with pytest.raises(ValueError, match="max_per_host must be >= 1"):
        PolicyServer(RecordingPolicy(), max_per_host=0)


def test_clients_beyond_max_clients_are_told_the_server_is_busy(start_server: Callable[..., PolicyServer]) -> None:
    server = start_server(RecordingPolicy(), max_clients=1)
    with RemotePolicy(server.url) as first:
        with pytest.raises(PolicyUnavailable, match="busy"):
            RemotePolicy(server.url)
        first.infer(make_obs())
    deadline = time.monotonic() + 2
    while True:  # the slot frees once the server has seen the first client go
        try:
            RemotePolicy(server.url).close()
            break
        except PolicyUnavailable:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_port_in_use_is_a_clear_error(server: PolicyServer) -> None:
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{server.port}.*--port"):
        PolicyServer(RecordingPolicy(), port=server.port).start()


def test_raw_socket_helper_sees_a_real_spec(server: PolicyServer) -> None:
    sock = raw_connect(server)  # the hostile tests above only mean something if a correct hello works
    sock.sendall(infer_frame(seq=5))
    sock.settimeout(5)
    (length,) = HEADER.unpack(sock.recv(4, socket.MSG_WAITALL))
    reply = msgpack.unpackb(sock.recv(length, socket.MSG_WAITALL))
    assert reply["kind"] == "actions" and reply["seq"] == 5 and reply["actions"]["shape"] == [50, 6]


def test_error_replies_and_logs_never_echo_a_large_request(server: PolicyServer, caplog: pytest.LogCaptureFixture
                                                            ) -> None:  # fmt: skip
    """A 4 MB request with a bad field gets a short error naming the field, and the log stays short too."""
    sock = raw_connect(server, hello=True)
    sock.sendall(infer_frame(delay=b"\x07" * 4_000_000))  # the delay must be an int: the message quotes it
    with caplog.at_level("INFO", logger="vla.runtime.server"):
        error = read_error(sock)
        time.sleep(0.2)
    assert error.code in (ErrorCode.MALFORMED, ErrorCode.BAD_REQUEST) and "delay" in error.message, error
    assert len(error.message) < 600, len(error.message)
    assert max(len(r.getMessage()) for r in caplog.records) < 1000


def test_silent_clients_cannot_hoard_the_slots(start_server: Callable[..., PolicyServer]) -> None:
    """Clients that say hello and then ask nothing lose their slot after `first_request_timeout`, so a real client
    gets in (before, they held every slot until the 300 s idle timeout)."""
    server = start_server(RecordingPolicy(), max_clients=2, max_per_host=2, first_request_timeout=0.5)
    hoarders = [raw_connect(server, hello=True) for _ in range(2)]
    with pytest.raises(PolicyUnavailable, match="busy"):
        RemotePolicy(server.url)
    time.sleep(1.0)
    with RemotePolicy(server.url) as client:  # a hoarder's slot went to it
        before = client.infer(make_obs())
        time.sleep(1.0)  # a client that has asked once keeps its slot past the first-request deadline
        assert np.array_equal(client.infer(make_obs()), before) and client.reconnects == 0
    for sock in hoarders:
        sock.settimeout(2)
        assert sock.recv(1) == b""  # dropped
