"""`vla serve` stops cleanly on Ctrl-C or SIGTERM while clients are connected: every client gets a goodbye (a
`shutdown` error) and the process exits 0 (it used to abort with SIGABRT when a client thread was still inside the
policy as the interpreter exited)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from runtime_helpers import SPEC, frame, make_obs, read_error, spawn_server

from vla.runtime.client import RemotePolicy
from vla.runtime.framing import recv_frame
from vla.runtime.messages import PROTOCOL_VERSION, ErrorCode, decode


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_stops_cleanly_with_clients_connected(sig: signal.Signals, tmp_path: Path) -> None:
    cams = [f"--camera={name}:{h}x{w}" for name, (h, w) in SPEC.cameras.items()]
    joints = ",".join(n.removesuffix(".pos") for n in SPEC.action_names)
    proc, url = spawn_server("--policy", "scripted", "--port", "0", "--latency", "0.1", f"--joints={joints}",
                             f"--chunk-size={SPEC.chunk_size}", *cams, log=tmp_path / "server.log")  # fmt: skip
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    idle = socket.create_connection((host, int(port)), timeout=5)  # said hello, then stays silent
    idle.sendall(frame({"v": PROTOCOL_VERSION, "kind": "hello", "token": None, "client": "idle"}))
    decode(recv_frame(idle, 1 << 20, time.monotonic() + 5))
    busy_errors: list[BaseException] = []
    stop = threading.Event()

    def keep_asking() -> None:  # a client with a request in flight when the signal comes
        try:
            with RemotePolicy(url) as remote:
                while not stop.is_set():
                    remote.infer(make_obs())
        except Exception as err:  # the goodbye, or the connection closing after it
            busy_errors.append(err)

    thread = threading.Thread(target=keep_asking)
    thread.start()
    time.sleep(1.0)
    proc.send_signal(sig)
    try:
        assert proc.wait(timeout=30) == 0, (tmp_path / "server.log").read_text()[-3000:]
    finally:
        stop.set()
        thread.join(timeout=10)
    assert read_error(idle).code == ErrorCode.SHUTDOWN
    assert "terminate called" not in (tmp_path / "server.log").read_text()
