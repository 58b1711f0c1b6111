"""Shared by the policy server tests: a deterministic policy, observations, raw sockets for hostile clients, and a
server in a subprocess that a test can kill. (A module of its own: every test directory has a `conftest`.)"""

from __future__ import annotations

import copy
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from vla.hardware.arms import JOINTS as SO101_JOINTS
from vla.runtime.framing import HEADER, recv_frame
from vla.runtime.messages import PROTOCOL_VERSION, Error, decode
from vla.runtime.policy import PolicySpec, RequestObservation
from vla.runtime.server import PolicyServer

REPO = Path(__file__).resolve().parents[2]
JOINTS = tuple(f"{j}.pos" for j in SO101_JOINTS)
# Two cameras of different, non-square sizes, so a swapped height/width or a mixed-up camera shows.
CAMERAS = {"front": (96, 96), "wrist": (48, 64)}
SPEC = PolicySpec(50, action_names=JOINTS, state_names=JOINTS, cameras=CAMERAS, fps=30.0, supports_prefix=True)


class RecordingPolicy:
    """Deterministic, and every input byte matters to its answer; records what it received.

    Clear `gate` to make it hang (until set again) like a slow GPU; set `fail` to make it raise.
    """

    def __init__(self, spec: PolicySpec = SPEC):
        self.spec = spec
        self.received: list[RequestObservation] = []
        self.resets = 0
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def reset(self) -> None:
        self.resets += 1

    def infer(self, obs: RequestObservation) -> np.ndarray:
        if not self.gate.wait(timeout=10):
            raise RuntimeError("test gate never opened")
        if self.fail:
            raise RuntimeError("CUDA out of memory (simulated)")
        self.received.append(copy.deepcopy(obs))
        n, a = self.spec.chunk_size, len(self.spec.action_names)
        pixels = sum(float(np.sin(img.astype(np.float64)).sum()) for img in obs.images.values())
        t = np.arange(n, dtype=np.float32)[:, None] / np.float32(7)
        chunk = obs.state[:a].astype(np.float32) * (1 + t) + np.float32(pixels / 1e4) + np.float32(len(obs.task))
        if obs.prefix is not None:
            chunk[: len(obs.prefix)] = obs.prefix
        return chunk


def make_obs(spec: PolicySpec = SPEC, seed: int = 0, task: str = "pick up the red cube") -> RequestObservation:
    rng = np.random.default_rng(seed)
    images = {name: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for name, (h, w) in spec.cameras.items()}
    state = rng.normal(0, 30, len(spec.state_names)).astype(np.float32)
    return RequestObservation(state=state, images=images, task=task)


# ---- raw sockets (for clients that do not follow the protocol) -------------------------------------------------


def frame(body: dict[str, Any] | bytes) -> bytes:
    payload = body if isinstance(body, bytes) else msgpack.packb(body, use_bin_type=True)
    return HEADER.pack(len(payload)) + payload


def raw_connect(server: PolicyServer, hello: bool = True, token: str | None = None) -> socket.socket:
    sock = socket.create_connection(server.address, timeout=5)
    if hello:
        sock.sendall(frame({"v": PROTOCOL_VERSION, "kind": "hello", "token": token, "client": "raw"}))
        reply = decode(recv_frame(sock, 1 << 20, time.monotonic() + 5))
        assert not isinstance(reply, Error), reply
    return sock


def read_error(sock: socket.socket, timeout: float = 5.0) -> Error:
    """The error the server sends before it disconnects; asserts that it then closes the connection."""
    reply = decode(recv_frame(sock, 1 << 20, time.monotonic() + timeout))
    assert isinstance(reply, Error), f"expected an error reply, got {reply}"
    sock.settimeout(timeout)
    assert sock.recv(1) == b"", "the server should close the connection after an error"
    return reply


# ---- a server in its own process -------------------------------------------------------------------------------


def ctrl_c_as_in_a_terminal() -> None:
    """For `Popen(preexec_fn=...)`: SIGINT back to its default, as in a terminal's foreground process. A process
    started in the background by a non-interactive shell (`make test &`) inherits SIGINT ignored, and Python then
    never raises KeyboardInterrupt, so a Ctrl-C test would fail for a reason of the caller's making."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn_server(*args: str, log: Path, timeout: float = 20.0) -> tuple[subprocess.Popen[str], str]:
    """`python -m vla.runtime.cli serve ARGS` in a subprocess -> (process, its tcp:// URL from the first line).

    Its log goes to the file `log` (it logs every request: a pipe that nobody reads would fill up and block it)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("a") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "vla.runtime.cli", "serve", *args], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=stderr, text=True,
                                preexec_fn=ctrl_c_as_in_a_terminal)  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.1)[0]:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("serving "):
                return proc, line.split(" on ", 1)[1].split()[0]
    proc.kill()
    proc.wait(timeout=5)
    raise AssertionError(f"server did not start: {log.read_text()}")
