"""`SharedArrays`: a fixed set of named numpy arrays in one shared-memory block, one writer, many readers.

Used where frames and states cross processes every tick (control loop -> inference worker, virtual cameras ->
control loop) without copying through pipes. A sequence counter makes reads consistent (a seqlock): the writer
makes it odd while writing and even when done; a reader copies, and retries if the counter moved or was odd.
Readers always get the latest complete write; nothing queues up. `layout()` is what another process needs to
`attach()`.
"""

from __future__ import annotations

import time
from multiprocessing import resource_tracker, shared_memory

import numpy as np

HEADER = 16  # seq (uint64), stamp (int64)


class SharedArrays:
    def __init__(self, shapes: dict[str, tuple[tuple[int, ...], str]], name: str | None = None,
                 create: bool = True, track: bool = True):  # fmt: skip
        """`shapes`: array name -> (shape, dtype). Creates the block, or attaches to `name` with create=False.

        `track=False` for a process that attaches to a block of an unrelated process: Python < 3.13 registers
        every attachment with this process's resource tracker, which would unlink the block when it exits.
        (Children made by multiprocessing share their parent's tracker and keep the default.)
        """
        self.shapes = {k: (tuple(s), str(d)) for k, (s, d) in shapes.items()}
        offsets, size = {}, HEADER
        for key, (shape, dtype) in self.shapes.items():
            size = (size + 15) // 16 * 16
            offsets[key] = size
            size += int(np.prod(shape)) * np.dtype(dtype).itemsize
        self.shm = shared_memory.SharedMemory(name=name, create=create, size=max(size, 1))
        self.owner = create
        if not create and not track:
            resource_tracker.unregister(self.shm._name, "shared_memory")  # type: ignore[attr-defined]
        buf = self.shm.buf
        self._seq: np.ndarray = np.ndarray((1,), np.uint64, buf, 0)
        self._stamp: np.ndarray = np.ndarray((1,), np.int64, buf, 8)
        self.arrays: dict[str, np.ndarray] = {k: np.ndarray(s, d, buf, offsets[k]) for k, (s, d) in self.shapes.items()}
        if create:
            self._seq[0] = 0
            self._stamp[0] = -1

    def layout(self) -> dict:
        return {"name": self.shm.name, "shapes": {k: [list(s), d] for k, (s, d) in self.shapes.items()}}

    @classmethod
    def attach(cls, layout: dict, track: bool = True) -> SharedArrays:
        shapes = {k: (tuple(s), d) for k, (s, d) in layout["shapes"].items()}
        return cls(shapes, name=layout["name"], create=False, track=track)

    def write(self, stamp: int, values: dict[str, np.ndarray]) -> None:
        """Copy `values` in (each must have its declared shape) under `stamp` (e.g. the control tick)."""
        self._seq[0] += 1  # odd: writing
        try:
            for key, value in values.items():
                self.arrays[key][...] = value
            self._stamp[0] = stamp
        finally:
            self._seq[0] += 1  # even: consistent

    def read(self, timeout: float = 0.1) -> tuple[int, dict[str, np.ndarray]]:
        """(stamp, copies of all arrays) from one complete write; stamp -1 before the first write."""
        end = time.monotonic() + timeout
        while True:
            before = int(self._seq[0])
            if not before % 2:
                out = {k: a.copy() for k, a in self.arrays.items()}
                stamp = int(self._stamp[0])
                if int(self._seq[0]) == before:
                    return stamp, out
            if time.monotonic() > end:
                raise TimeoutError("shared arrays: the writer did not finish a write in time (did it crash?)")

    @property
    def stamp(self) -> int:
        return int(self._stamp[0])

    def close(self) -> None:
        self.arrays.clear()
        del self._seq, self._stamp
        self.shm.close()
        if self.owner:
            self.shm.unlink()
