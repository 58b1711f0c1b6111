"""The inference worker: the policy in its own process, so neither the GIL nor a slow chunk can stall the loop.

    worker = InferenceWorker(PolicySource("checkpoint", path=CKPT), state_dim=6, cameras={"front": (96, 96)})
    spec = worker.start()              # spawns the process, loads the policy, returns its PolicySpec
    worker.publish(tick, state, frames)   # every tick: the latest observation into shared memory (a copy)
    worker.request(req)                # when the strategy asks: compute a chunk from the latest observation
    for event in worker.poll(): ...    # never blocks: ChunkReady / ChunkFailed

The worker reads the observation when it starts computing (always the newest, whatever tick the request was
made at) and reports which tick that was, so the loop knows the chunk's true age; a prefix for real-time chunking
is shifted by the ticks that passed in between. Requests and replies cross a pipe as msgpack maps with arrays
packed as the policy server packs them (`vla.runtime.messages`: one codec, never pickle). A worker that dies, or
whose policy raises, turns into events, never into a stall.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
import traceback
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from vla.runtime.chunking import Request
from vla.runtime.messages import (
    MalformedMessage,
    ProtocolError,
    decode_map,
    pack_array,
    spec_from_map,
    spec_to_map,
    unpack_array,
)
from vla.runtime.policy import PolicySpec, RequestObservation, ScriptedPolicy
from vla.shm import SharedArrays


@dataclass
class PolicySource:
    """How the worker builds its policy (it must be re-creatable in a fresh process)."""

    kind: str  # "checkpoint" | "scripted" | "remote" | "preset"
    path: str = ""  # checkpoint directory, the server URL for "remote", the preset name for "preset"
    device: str = "cpu"
    rtc_mode: str = "guidance"
    dtype: str | None = None  # checkpoint: override its inference precision (float32, bfloat16, int8)
    compile: bool = False  # checkpoint: torch.compile its inference path
    task: str = ""  # checkpoint: the instruction a compiled policy warms up with
    token: str | None = None
    latency: float = 0.0  # scripted: seconds per chunk
    error: str = ""  # scripted: fail every request with this message
    spec: PolicySpec | None = None  # scripted and preset: what the stand-in serves

    def build(self):
        if self.kind == "checkpoint":
            from vla.runtime.checkpoint import load_checkpoint_policy

            return load_checkpoint_policy(self.path, self.device, self.rtc_mode, self.dtype, self.compile, self.task)
        if self.kind in ("scripted", "preset") and self.spec is None:
            raise ValueError(f"a '{self.kind}' policy source needs a spec")
        if self.kind == "scripted":
            assert self.spec is not None
            return ScriptedPolicy(self.spec, latency=self.latency, error=self.error)
        if self.kind == "preset":  # a random network of a model preset: real inference cost, for benchmarks
            from vla.runtime.checkpoint import PresetPolicy

            assert self.spec is not None
            return PresetPolicy(self.path, self.spec.action_names, self.spec.cameras, self.spec.fps, self.device)
        if self.kind == "remote":
            from vla.runtime.client import RemotePolicy

            return RemotePolicy(self.path, token=self.token)
        raise ValueError(f"unknown policy source '{self.kind}' (checkpoint, scripted or remote)")


@dataclass
class ChunkReady:
    tick: int  # the observation's tick
    chunk: np.ndarray  # (H, A)
    compute_s: float


@dataclass
class ChunkFailed:
    tick: int
    message: str


# -- the pipe's messages: msgpack maps, arrays in the wire protocol's form (vla.runtime.messages), never pickle --
def pack(header: dict, arrays: dict[str, np.ndarray] | None = None) -> bytes:
    body = {**header, "arrays": {k: pack_array(a) for k, a in (arrays or {}).items()}}
    return msgpack.packb(body, use_bin_type=True)


class PipeError(ValueError):
    """A pipe message that `pack` did not write (the fuzzer checks that nothing else escapes `unpack`)."""


def unpack(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """`pack`'s inverse, with the policy server's bounded decoder. Raises `PipeError` for anything `pack` would not
    have written, never another error."""
    try:
        header = decode_map(data)
        packed = header.pop("arrays", None)
        if not isinstance(packed, dict):
            raise MalformedMessage("a pipe message needs an 'arrays' map")
        return header, {key: unpack_array(value, f"array {key!r}") for key, value in packed.items()}
    except ProtocolError as err:
        raise PipeError(str(err)[:300]) from None


def fit_frame(frame: np.ndarray, size: tuple[int, ...] | None) -> np.ndarray:
    """A camera frame (H, W, 3) at the (height, width) the policy was trained on, resized the way `vla data cache
    --size` resizes training frames (antialiased bilinear, no padding); unchanged when it already fits."""
    if size is None or tuple(frame.shape[:2]) == tuple(size):
        return frame
    from vla.datasets.cache import resize_frames

    return resize_frames(frame[None], (int(size[0]), int(size[1])))[0]


def _serve(conn, source: PolicySource, layout: dict) -> None:
    """The worker process."""
    try:
        policy = source.build()
        observations = SharedArrays.attach(layout)
        conn.send_bytes(pack({"kind": "ready", "spec": spec_to_map(policy.spec)}))
    except Exception as err:
        conn.send_bytes(pack({"kind": "fatal", "message": f"{type(err).__name__}: {err}"}))
        return
    cameras = [k for k in observations.arrays if k != "state"]
    sizes = {name: tuple(size) for name, size in policy.spec.cameras.items()}
    while True:
        try:
            header, arrays = unpack(conn.recv_bytes())
        except (EOFError, OSError):
            return  # the loop is gone
        if header["kind"] == "stop":
            return
        if header["kind"] == "reset":
            policy.reset()
            continue
        tick, values = observations.read()
        start = time.perf_counter()
        try:
            prefix, delay = arrays.get("prefix"), int(header["delay"])
            moved = tick - int(header["tick"])  # ticks that passed since the request's prefix was cut
            if prefix is not None and moved > 0:
                prefix, delay = prefix[moved:], max(delay - moved, 0)
            images = {c: fit_frame(values[c], sizes.get(c)) for c in cameras}
            obs = RequestObservation(values["state"], images, header["task"], prefix, delay)
            chunk = np.asarray(policy.infer(obs), np.float32)
            conn.send_bytes(pack({"kind": "chunk", "tick": tick, "compute_s": time.perf_counter() - start},
                                 {"chunk": chunk}))  # fmt: skip
        except Exception as err:
            message = f"{type(err).__name__}: {err}"
            conn.send_bytes(pack({"kind": "error", "tick": tick, "message": message,
                                  "trace": traceback.format_exc(limit=5)}))  # fmt: skip


class InferenceWorker:
    def __init__(self, source: PolicySource, state_dim: int, cameras: dict[str, tuple[int, int]], task: str = ""):
        self.source, self.task = source, task
        shapes: dict[str, tuple[tuple[int, ...], str]] = {"state": ((state_dim,), "float32")}
        shapes.update({name: ((h, w, 3), "uint8") for name, (h, w) in cameras.items()})
        self.observations = SharedArrays(shapes)
        self.process: Any = None
        self.conn: Any = None
        self.busy = False
        self.spec: PolicySpec | None = None
        self._failed: list[ChunkFailed] = []

    def start(self, timeout: float = 300.0) -> PolicySpec:
        ctx = mp.get_context("spawn")  # a fresh interpreter: no inherited threads, locks or torch state
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, self.source, self.observations.layout()),
                                   name="vla-inference", daemon=True)  # fmt: skip
        self.process.start()
        child.close()
        if not self.conn.poll(timeout):
            self.stop()
            raise TimeoutError(f"the inference worker did not load its policy within {timeout:.0f} s")
        header, _ = unpack(self.conn.recv_bytes())
        if header["kind"] != "ready":
            self.stop()
            raise RuntimeError(f"the inference worker could not load its policy: {header.get('message')}")
        self.spec = spec_from_map(header["spec"])
        return self.spec

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def publish(self, tick: int, state: np.ndarray, frames: dict[str, np.ndarray]) -> None:
        self.observations.write(tick, {"state": state, **frames})

    def request(self, req: Request) -> None:
        """Ask for a chunk; if the worker is gone the failure comes back from the next `poll()`."""
        arrays = {"prefix": np.asarray(req.prefix, np.float32)} if req.prefix is not None else {}
        message = pack({"kind": "infer", "tick": req.tick, "delay": req.delay, "task": self.task}, arrays)
        try:
            self.conn.send_bytes(message)
            self.busy = True
        except (OSError, ValueError, AttributeError):
            code = self.process.exitcode if self.process is not None else None
            self._failed.append(ChunkFailed(req.tick, f"the inference worker died (exit code {code})"))

    def reset(self) -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            self.conn.send_bytes(pack({"kind": "reset"}))

    def poll(self) -> list[ChunkReady | ChunkFailed]:
        events: list[ChunkReady | ChunkFailed] = list(self._failed)
        self._failed.clear()
        try:
            while self.conn is not None and self.conn.poll(0):
                header, arrays = unpack(self.conn.recv_bytes())
                self.busy = False
                if header["kind"] == "chunk":
                    events.append(ChunkReady(header["tick"], arrays["chunk"], header["compute_s"]))
                else:
                    events.append(ChunkFailed(header.get("tick", -1), header.get("message", "unknown error")))
        except (EOFError, OSError):
            pass
        if self.busy and not self.alive:
            self.busy = False
            events.append(ChunkFailed(-1, f"the inference worker died (exit code {self.process.exitcode})"))
        return events

    def stop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError, ValueError):
                self.conn.send_bytes(pack({"kind": "stop"}))
        if self.process is not None:
            self.process.join(timeout=5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.observations.close()
