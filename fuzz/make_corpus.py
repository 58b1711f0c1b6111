"""Writes the seed corpora (valid messages of every kind, a few broken ones): fuzz/corpus/{messages,pipe}/."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vla.runtime.messages import Error, Hello, InferRequest, Reset, encode
from vla.runtime.policy import RequestObservation
from vla.runtime.worker import pack

HERE = Path(__file__).parent


def main() -> None:
    rng = np.random.default_rng(0)
    state = rng.normal(size=6).astype(np.float32)
    images = {"front": rng.integers(0, 255, (8, 8, 3), np.uint8), "wrist": rng.integers(0, 255, (4, 6, 3), np.uint8)}
    prefix = rng.normal(size=(5, 6)).astype(np.float32)
    messages = {
        "hello": encode(Hello(token="secret", client="robot")),
        "infer": encode(InferRequest(1, 0.5, RequestObservation(state, images, "pick up the red cube"))),
        "infer_prefix": encode(InferRequest(2, 0.5, RequestObservation(state, images, "stack it", prefix, 2))),
        "reset": encode(Reset(3)),
        "error": encode(Error("busy", "server full", 4)),
        "not_msgpack": b"\xc1\xc1\xc1",
    }
    pipe = {
        "request": pack({"kind": "request", "tick": 5, "delay": 2, "task": "go"}, {"prefix": prefix}),
        "chunk": pack({"kind": "chunk", "tick": 5, "compute_s": 0.01}, {"chunk": rng.normal(size=(50, 6))}),
        "frames": pack({"kind": "obs"}, {"state": state, **images}),
        "empty": pack({"kind": "stop"}),
    }
    for folder, items in (("messages", messages), ("pipe", pipe)):
        out = HERE / "corpus" / folder
        out.mkdir(parents=True, exist_ok=True)
        for name, data in items.items():
            (out / name).write_bytes(data)


if __name__ == "__main__":
    main()
