"""`write_json_atomic`: a reader never sees a half-written file, and a failed write leaves the old one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vla.files import write_json_atomic


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "meta" / "state.json"
    write_json_atomic(path, {"next_seed": 3})

    def crash(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_json_atomic(path, {"next_seed": 4})
    assert json.loads(path.read_text()) == {"next_seed": 3}
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_concurrent_reader_always_sees_complete_json(tmp_path: Path) -> None:
    """The race CI hit: a reader polling the record state while the recorder rewrites it."""
    import threading

    path = tmp_path / "state.json"
    write_json_atomic(path, {"next_seed": 0, "pad": "x" * 10_000})
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            write_json_atomic(path, {"next_seed": i, "pad": "x" * 10_000})

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(2000):
            assert json.loads(path.read_text())["next_seed"] >= 0
    finally:
        stop.set()
        thread.join()
