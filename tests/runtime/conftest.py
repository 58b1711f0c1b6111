"""Fixtures for the policy server tests: servers on free ports (closed after each test), killable subprocesses."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import RecordingPolicy, spawn_server

from vla.runtime.server import PolicyServer


@pytest.fixture
def policy() -> RecordingPolicy:
    return RecordingPolicy()


@pytest.fixture
def start_server() -> Iterator[Callable[..., PolicyServer]]:
    """start_server(policy, **kwargs): a started server on a free loopback port, closed after the test."""
    servers: list[PolicyServer] = []

    def start(policy: Any, **kwargs: Any) -> PolicyServer:
        kwargs.setdefault("port", 0)
        server = PolicyServer(policy, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def server(start_server: Callable[..., PolicyServer], policy: RecordingPolicy) -> PolicyServer:
    return start_server(policy, handshake_timeout=0.5, frame_timeout=0.5)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[str], str]]]:
    """spawn(*serve_args) -> (process, url): `vla serve` in a subprocess, killed after the test."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], str]:
        proc, url = spawn_server(*args, log=tmp_path / "server.log")
        procs.append(proc)
        return proc, url

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
