"""`RemotePolicy` when things go wrong: slow, silent, killed and restarted servers; stale replies; latency."""

from __future__ import annotations

import dataclasses
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from runtime_helpers import SPEC, RecordingPolicy, make_obs

from vla.runtime.client import PolicyUnavailable, RemotePolicy, SpecChanged, parse_url
from vla.runtime.messages import HANDSHAKE_MAX_FRAME, FrameTooLarge, InvalidObservation
from vla.runtime.policy import ScriptedPolicy
from vla.runtime.server import PolicyServer

Spawn = Callable[..., tuple[subprocess.Popen[str], str]]
SLACK = 0.3  # scheduling noise on a shared 2-core machine; the client's own deadline is exact


def timed(fn: Callable[[], object]) -> tuple[BaseException | None, float]:
    start = time.monotonic()
    try:
        fn()
    except Exception as err:
        return err, time.monotonic() - start
    return None, time.monotonic() - start


def filled(value: float) -> np.ndarray:
    return np.full((50, 6), value, np.float32)


def test_slow_server_raises_within_the_timeout_and_its_late_reply_is_discarded(
    server: PolicyServer, policy: RecordingPolicy
) -> None:
    remote = RemotePolicy(server.url, timeout=0.3)
    first, second = make_obs(seed=1), make_obs(seed=2)
    first.prefix, second.prefix = filled(1.0), filled(2.0)  # the policy echoes a full prefix: answers are tellable
    policy.gate.clear()  # the policy hangs
    err, elapsed = timed(lambda: remote.infer(first))
    assert isinstance(err, PolicyUnavailable) and "within 0.3 s" in str(err)
    assert 0.3 <= elapsed < 0.3 + SLACK
    policy.gate.set()  # the first request now completes; its reply arrives late
    remote.timeout = 5.0
    assert np.array_equal(remote.infer(second), filled(2.0)), "a stale reply was returned for a newer request"
    assert remote.stale_replies == 1 and remote.reconnects == 0
    assert np.array_equal(remote.infer(first), filled(1.0))
    remote.close()


def test_server_that_accepts_but_never_answers_cannot_block_the_client() -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # a black hole: the kernel accepts, nobody replies
    try:
        err, elapsed = timed(lambda: RemotePolicy(f"tcp://127.0.0.1:{listener.getsockname()[1]}", connect_timeout=0.3))
        assert isinstance(err, PolicyUnavailable) and "handshake" in str(err)
        assert elapsed < 0.3 + SLACK
    finally:
        listener.close()


def test_nobody_listening_is_reported_at_once() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    err, elapsed = timed(lambda: RemotePolicy(f"tcp://127.0.0.1:{port}", connect_timeout=2.0))
    assert isinstance(err, PolicyUnavailable) and f"127.0.0.1:{port}" in str(err)
    assert elapsed < 1.0


def test_killed_server_raises_promptly_and_the_client_recovers_when_it_returns(
    spawn: Spawn,
) -> None:
    proc, url = spawn("--policy", "scripted", "--port", "0", "--latency", "0.05")
    port = url.rsplit(":", 1)[1]
    remote = RemotePolicy(url, timeout=2.0)
    obs = make_obs(dataclasses.replace(SPEC, cameras={"front": (96, 96)}))
    assert remote.infer(obs).shape == (50, 6)

    threading.Timer(0.02, proc.kill).start()  # SIGKILL while the next request is being computed
    err, elapsed = timed(lambda: remote.infer(obs))
    assert isinstance(err, PolicyUnavailable) and elapsed < 1.0, (err, elapsed)
    proc.wait(timeout=5)
    for _ in range(3):  # while it is down every call fails fast, nothing blocks for the whole timeout
        err, elapsed = timed(lambda: remote.infer(obs))
        assert isinstance(err, PolicyUnavailable) and "cannot connect" in str(err) and elapsed < 1.0

    spawn("--policy", "scripted", "--port", port)  # back on the same port
    assert remote.infer(obs).shape == (50, 6)
    assert remote.reconnects == 1
    remote.close()


def test_server_closed_between_requests_is_noticed_and_rejoined(start_server: Callable[..., PolicyServer]) -> None:
    server = start_server(RecordingPolicy())
    remote = RemotePolicy(server.url, timeout=1.0)
    remote.infer(make_obs())
    server.close()
    err, elapsed = timed(lambda: remote.infer(make_obs()))
    assert isinstance(err, PolicyUnavailable) and elapsed < 1.0 + SLACK
    start_server(RecordingPolicy(), port=server.port)
    remote.infer(make_obs())
    remote.close()


def test_restarted_server_with_another_spec_is_refused(start_server: Callable[..., PolicyServer]) -> None:
    server = start_server(RecordingPolicy())
    remote = RemotePolicy(server.url)
    server.close()
    start_server(RecordingPolicy(dataclasses.replace(SPEC, chunk_size=10)), port=server.port)
    with pytest.raises(SpecChanged, match="chunk_size=10"):
        remote.infer(make_obs())
    assert remote.spec.chunk_size == 50
    remote.close()


def test_observation_is_checked_before_anything_is_sent(server: PolicyServer, policy: RecordingPolicy) -> None:
    obs = make_obs()
    obs.state[0] = np.nan
    with RemotePolicy(server.url) as remote, pytest.raises(InvalidObservation, match="NaN"):
        remote.infer(obs)
    assert policy.received == [] and server.rejected == 0


def test_request_above_the_servers_frame_limit_is_refused_locally(start_server: Callable[..., PolicyServer]) -> None:
    spec = dataclasses.replace(SPEC, cameras={"front": (256, 256)})  # 196 KB per image
    server = start_server(RecordingPolicy(spec), max_frame=HANDSHAKE_MAX_FRAME)
    with RemotePolicy(server.url) as remote:
        assert remote.server_max_frame == HANDSHAKE_MAX_FRAME
        with pytest.raises(FrameTooLarge, match="max-frame-mib"):
            remote.infer(make_obs(spec))
    assert server.rejected == 0


def test_latency_is_measured(start_server: Callable[..., PolicyServer]) -> None:
    server = start_server(ScriptedPolicy(dataclasses.replace(SPEC, cameras={}), latency=0.02))
    with RemotePolicy(server.url) as remote:
        with pytest.raises(ValueError, match="no round trip"):
            remote.latency()
        for _ in range(5):
            remote.infer(make_obs(remote.spec))
        stats = remote.latency()
    assert stats.count == 5 and stats.p50 <= stats.p99 <= stats.max
    assert remote.last_compute_s is not None and remote.last_compute_s >= 0.02
    assert remote.last_rtt_s is not None and remote.last_rtt_s >= remote.last_compute_s


def test_concurrent_calls_on_one_client_are_serialised(server: PolicyServer) -> None:
    local, results = RecordingPolicy(), dict[int, np.ndarray]()
    with RemotePolicy(server.url, timeout=5.0) as remote:
        threads = [threading.Thread(target=lambda s=s: results.__setitem__(s, remote.infer(make_obs(seed=s))))
                   for s in range(4)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
    for seed, actions in results.items():
        assert np.array_equal(actions, local.infer(make_obs(seed=seed)))
    assert len(results) == 4


@pytest.mark.parametrize(
    ("url", "expected"),
    [("tcp://127.0.0.1:8765", ("127.0.0.1", 8765)), ("gpu-box:9000", ("gpu-box", 9000)),
     ("tcp://[::1]:8765", ("::1", 8765))],
)  # fmt: skip
def test_url_parsing(url: str, expected: tuple[str, int]) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize("url", ["http://127.0.0.1:8765", "tcp://127.0.0.1", "tcp://:8765", "tcp://h:99999"])
def test_bad_urls_say_what_is_expected(url: str) -> None:
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        parse_url(url)


def test_sigterm_stops_the_served_process_cleanly(spawn: Spawn) -> None:
    proc, url = spawn("--policy", "scripted", "--port", "0")
    with RemotePolicy(url) as remote:
        remote.infer(make_obs(dataclasses.replace(SPEC, cameras={"front": (96, 96)})))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
