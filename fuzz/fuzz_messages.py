"""Coverage-guided fuzzing (atheris) of what a policy server reads from the network: `decode` (msgpack frames ->
typed messages) and, for infer requests, `check_observation` against a policy's spec.

The contract: any bytes give a message or a `ProtocolError`; nothing else escapes (no other exception, no hang, no
crash). `make fuzz` runs this for a bounded time on the seed corpus in fuzz/corpus/messages.

    python fuzz/fuzz_messages.py fuzz/corpus/messages -max_total_time=60
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from vla.runtime.messages import InferRequest, ProtocolError, check_observation, decode
    from vla.runtime.policy import PolicySpec

JOINTS = tuple(f"j{i}.pos" for i in range(6))
# small frames keep each input small, so the fuzzer runs fast
SPEC = PolicySpec(50, JOINTS, JOINTS, {"front": (8, 8), "wrist": (4, 6)}, 30.0, supports_prefix=True)


def test_one(data: bytes) -> None:
    try:
        msg = decode(data)
        if isinstance(msg, InferRequest):
            check_observation(msg.obs, SPEC)
    except ProtocolError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()
