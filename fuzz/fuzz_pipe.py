"""Coverage-guided fuzzing (atheris) of the inference worker's pipe codec (`vla.runtime.worker.pack` / `unpack`).

The contract: any bytes give (header, arrays) or a `PipeError`, nothing else; and whatever `unpack` accepts, `pack`
writes back to a message that unpacks to the same thing. `make fuzz` runs this on fuzz/corpus/pipe.

    python fuzz/fuzz_pipe.py fuzz/corpus/pipe -max_total_time=60
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import numpy as np

    from vla.runtime.worker import PipeError, pack, unpack


def test_one(data: bytes) -> None:
    try:
        header, arrays = unpack(data)
    except PipeError:
        return
    again_header, again = unpack(pack(header, arrays))
    assert again_header == header and again.keys() == arrays.keys()
    for key, value in arrays.items():
        assert again[key].dtype == value.dtype and np.array_equal(again[key], value, equal_nan=True)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()
