"""Policy server round trips on localhost, and what the msgpack schema costs on its own.

    .venv/bin/python benchmarks/bench_server.py [--iterations 2000]

The server is `vla serve --policy scripted --latency 0` in its own process (as in deployment: the robot-side
process shares no GIL with it), logging every request as it does by default. The client is `RemotePolicy`. One
request = one observation (6-joint state, the cameras of the row, a task string) -> one 50x6 float32 chunk.
Reported: round trip p50 / p99 / max (client send to reply decoded, including the server's policy call), the
server's own policy time (p50), and the time to encode and decode each message with `vla.runtime.messages`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vla.runtime.client import RemotePolicy
from vla.runtime.messages import InferReply, InferRequest, decode, encode
from vla.runtime.policy import RequestObservation

CASES = {  # row name -> --camera flags of the served scripted policy
    "1 camera 96x96": ["front:96x96"],
    "2 cameras 480x640": ["front:480x640", "wrist:480x640"],
}


def start_server(cameras: list[str]) -> tuple[subprocess.Popen[str], str]:
    flags = [f for c in cameras for f in ("--camera", c)]
    cmd = [sys.executable, "-m", "vla.runtime.cli", "serve", "--policy", "scripted", "--port", "0", *flags]
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("serving "):
            return proc, line.split(" on ", 1)[1].split()[0]
    raise RuntimeError(f"vla serve did not start: {' '.join(cmd)}")


def median_us(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e6


def bench(cameras: list[str], iterations: int) -> dict[str, float]:
    proc, url = start_server(cameras)
    try:
        with RemotePolicy(url, timeout=5.0) as remote:
            spec, rng = remote.spec, np.random.default_rng(0)
            images = {k: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for k, (h, w) in spec.cameras.items()}
            obs = RequestObservation(np.zeros(len(spec.state_names), np.float32), images, "pick up the red cube")
            for _ in range(100):  # warm-up
                actions = remote.infer(obs)
            rtts, computes = [], []
            for _ in range(iterations):
                remote.infer(obs)
                rtts.append(remote.last_rtt_s or 0.0)
                computes.append(remote.last_compute_s or 0.0)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    request, reply = InferRequest(1, 0.0, obs), InferReply(1, 0.0, actions, 0.0)
    req_bytes, reply_bytes = encode(request), encode(reply)
    n = min(iterations, 1000)
    p50, p99 = (float(v) * 1e3 for v in np.percentile(rtts, [50, 99]))
    return {
        "bytes": len(req_bytes), "p50": p50, "p99": p99, "max": max(rtts) * 1e3,
        "compute": float(np.median(computes)) * 1e3,
        "enc_req": median_us(lambda: encode(request), n), "dec_req": median_us(lambda: decode(req_bytes), n),
        "enc_reply": median_us(lambda: encode(reply), n), "dec_reply": median_us(lambda: decode(reply_bytes), n),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()
    rows = {name: bench(cameras, args.iterations) for name, cameras in CASES.items()}
    print(f"\nRound trips through `vla serve --policy scripted` on localhost, {args.iterations} requests each\n")
    print("| observation | request bytes | RTT p50 ms | RTT p99 ms | RTT max ms | server policy p50 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['bytes']:,} | {r['p50']:.3f} | {r['p99']:.3f} | {r['max']:.3f} | {r['compute']:.3f} |")
    print("\nmsgpack encode / decode (median µs; the reply is the 50x6 float32 chunk)\n")
    print("| observation | encode request | decode request | encode reply | decode reply |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['enc_req']:.1f} | {r['dec_req']:.1f} | {r['enc_reply']:.1f} | {r['dec_reply']:.1f} |")


if __name__ == "__main__":
    main()
