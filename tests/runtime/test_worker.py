"""The inference worker process and the shared-memory observation it reads."""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np
import pytest

from vla.runtime.chunking import Request
from vla.runtime.policy import PolicySpec
from vla.runtime.worker import ChunkFailed, ChunkReady, InferenceWorker, PolicySource, pack, unpack
from vla.shm import SharedArrays

NAMES = [f"j{i}.pos" for i in range(6)]


def source(latency: float = 0.0, chunk: int = 20) -> PolicySource:
    spec = PolicySpec(chunk_size=chunk, action_names=tuple(NAMES), state_names=tuple(NAMES),
                      cameras={"front": (16, 16)}, fps=30.0, supports_prefix=True)
    return PolicySource("scripted", latency=latency, spec=spec)


def wait_for(worker: InferenceWorker, timeout: float = 10.0) -> list:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        events = worker.poll()
        if events:
            return events
        time.sleep(0.002)
    raise TimeoutError("no event from the worker")


def _write_torn(layout: dict, n: int) -> None:
    arrays = SharedArrays.attach(layout)
    for k in range(n):
        arrays.write(k, {"a": np.full(4096, k, np.int64), "b": np.full(4096, k, np.int64)})


def test_shared_arrays_reads_are_never_torn() -> None:
    arrays = SharedArrays({"a": ((4096,), "int64"), "b": ((4096,), "int64")})
    writer = mp.get_context("spawn").Process(target=_write_torn, args=(arrays.layout(), 3000))
    writer.start()
    seen = 0
    try:
        while writer.is_alive():
            stamp, values = arrays.read()
            if stamp >= 0:
                assert (values["a"] == stamp).all() and (values["b"] == stamp).all()
                seen += 1
    finally:
        writer.join()
        arrays.close()
    assert seen > 10


def test_worker_answers_from_the_newest_observation_and_shifts_the_prefix() -> None:
    worker = InferenceWorker(source(latency=0.05), state_dim=6, cameras={"front": (16, 16)}, task="t")
    spec = worker.start(timeout=60)
    try:
        assert spec.chunk_size == 20 and spec.action_names == tuple(NAMES)
        frame = {"front": np.zeros((16, 16, 3), np.uint8)}
        worker.publish(10, np.zeros(6, np.float32), frame)
        prefix = np.arange(12 * 6, dtype=np.float32).reshape(12, 6)
        worker.publish(13, np.ones(6, np.float32), frame)  # three ticks passed before the worker looked
        worker.request(Request(tick=10, prefix=prefix, delay=4))
        (event,) = wait_for(worker)
        assert isinstance(event, ChunkReady) and event.tick == 13 and event.compute_s >= 0.05
        np.testing.assert_array_equal(event.chunk[:9], prefix[3:])  # the prefix, cut at the observation's tick
        assert not worker.busy
    finally:
        worker.stop()


def test_a_dead_worker_becomes_an_event_not_a_hang() -> None:
    worker = InferenceWorker(source(latency=2.0), state_dim=6, cameras={"front": (16, 16)})
    worker.start(timeout=60)
    try:
        worker.publish(0, np.zeros(6, np.float32), {"front": np.zeros((16, 16, 3), np.uint8)})
        worker.request(Request(0, None, 0))
        worker.process.kill()
        (event,) = wait_for(worker)
        assert isinstance(event, ChunkFailed) and "died" in event.message
        worker.request(Request(1, None, 0))  # asking again does not raise either
        (event,) = wait_for(worker)
        assert isinstance(event, ChunkFailed)
    finally:
        worker.stop()


def test_a_policy_that_cannot_load_is_reported() -> None:
    worker = InferenceWorker(PolicySource("checkpoint", path="/nonexistent/ckpt"), state_dim=6, cameras={})
    with pytest.raises(RuntimeError, match="could not load its policy"):
        worker.start(timeout=120)


def test_pipe_messages_round_trip_without_pickle() -> None:
    arrays = {"chunk": np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)}
    header, back = unpack(pack({"kind": "chunk", "tick": 7}, arrays))
    assert header == {"kind": "chunk", "tick": 7}
    np.testing.assert_array_equal(back["chunk"], arrays["chunk"])


def _mp(obj: object) -> bytes:
    import msgpack

    return msgpack.packb(obj, use_bin_type=True)


PIPE_GARBAGE = {
    "empty": b"",
    "not msgpack": b"\xc1\x00",
    "trailing bytes": _mp({"arrays": {}}) + b"\x00",
    "a list": _mp([1, 2]),
    "no arrays": _mp({"kind": "chunk"}),
    "arrays not a map": _mp({"arrays": [1]}),
    "object dtype": _mp({"arrays": {"a": {"dtype": "object", "shape": [1], "data": b"x"}}}),
    "huge shape": _mp({"arrays": {"a": {"dtype": "float64", "shape": [2147483647, 65536], "data": b""}}}),
    "data shorter than shape": _mp({"arrays": {"a": {"dtype": "float32", "shape": [1000], "data": bytes(8)}}}),
    "extension type": b"\x81\xa6arrays\xd4\x01\x00",
    "deep nesting": b"\x91" * 5000 + b"\x00",
}


@pytest.mark.parametrize("case", PIPE_GARBAGE, ids=list(PIPE_GARBAGE))
def test_pipe_garbage_is_a_pipe_error(case: str) -> None:
    """Inputs the fuzzer (fuzz/fuzz_pipe.py) tries: each one a `PipeError`, never another exception."""
    from vla.runtime.worker import PipeError, unpack

    with pytest.raises(PipeError):
        unpack(PIPE_GARBAGE[case])


def test_pipe_round_trip() -> None:
    from vla.runtime.worker import pack, unpack

    arrays = {"state": np.arange(6, dtype=np.float32), "front": np.zeros((4, 6, 3), np.uint8),
              "scalar": np.ones((), np.float64)}  # fmt: skip
    header, back = unpack(pack({"kind": "obs", "tick": 3}, arrays))
    assert header == {"kind": "obs", "tick": 3} and all(np.array_equal(back[k], arrays[k]) for k in arrays)
    assert all(back[k].dtype == arrays[k].dtype for k in arrays)
