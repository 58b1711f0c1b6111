"""Control-loop timing: period error at 30 and 100 Hz while the `small` preset runs inference in the worker,
with and without real-time scheduling (SCHED_FIFO + mlockall), in one run.

    .venv/bin/python benchmarks/bench_loop.py [--seconds 10] [--rates 30 100]

The loop drives a virtual SO-101 over its pseudo-terminal (our follower, 1 Mbps emulated bus, motor-model twin,
its own process) and publishes a 128x128 camera frame to the worker every tick; the worker computes chunks
continuously with the `small` preset (random weights: the cost of real inference), so the two CPU cores are
contended the whole time. Reported: tick lateness p50 / p99 / max (how late each tick started against its absolute
deadline), ticks skipped because one overran a whole period, and chunks computed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from vla.hardware.robots import SO101Follower
from vla.runtime.io import FollowerIO
from vla.runtime.loop import ControlLoop, LoopConfig
from vla.runtime.policy import PolicySpec
from vla.runtime.rt import disable_realtime, enable_realtime
from vla.runtime.worker import InferenceWorker, PolicySource

CAMERA = (128, 128)
FRAME = np.full((*CAMERA, 3), 127, np.uint8)


class FrameIO(FollowerIO):
    """The follower plus a fixed camera frame (the worker's input size for the `small` preset)."""

    def frames(self) -> dict[str, np.ndarray]:
        return {"front": FRAME}


def start_arm() -> tuple[subprocess.Popen, str, str]:
    vla = str(Path(sys.executable).with_name("vla"))
    proc = subprocess.Popen([vla, "virtual-arm", "--twin", "motor"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = calibration = ""
    for line in proc.stdout:
        if m := re.match(r"virtual so101 follower on (\S+)", line):
            port = m.group(1)
        if m := re.match(r"calibration: (\S+)", line):
            calibration = m.group(1)
            break
    return proc, port, calibration


def run(io: FollowerIO, fps: float, realtime: bool, inference: bool, seconds: float) -> dict[str, float]:
    worker = None
    if inference:
        names = tuple(io.names)
        spec = PolicySpec(chunk_size=50, action_names=names, state_names=names, cameras={"front": CAMERA}, fps=fps)
        worker = InferenceWorker(PolicySource("preset", path="small", spec=spec), state_dim=len(names),
                                 cameras={"front": CAMERA})  # fmt: skip
        worker.start()
    try:
        # execute=1: ask for a new chunk every tick, so inference runs back to back the whole time
        config = LoopConfig(fps=fps, strategy="async", execute=1, realtime=realtime, safe_after_s=1e9)
        still = None if worker is not None else _Still(io.read())  # no policy: hold the pose, same loop
        log = ControlLoop(io, worker, config, teleop=still).run(duration_s=seconds)
    finally:
        if realtime:
            disable_realtime()
        if worker is not None:
            worker.stop()
    late = np.array(log.lateness[1:]) * 1000
    return {"p50": float(np.percentile(late, 50)), "p99": float(np.percentile(late, 99)), "max": float(late.max()),
            "overruns": log.overruns, "chunks": len(log.chunk_latency_s), "rt": log.realtime}  # fmt: skip


class _Still:
    def __init__(self, pose: np.ndarray):
        self.pose = pose

    def read(self) -> np.ndarray:
        return self.pose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rates", type=float, nargs="+", default=[30.0, 100.0])
    args = parser.parse_args()
    status = enable_realtime()
    disable_realtime()
    print(f"real-time scheduling here: {status}\n", flush=True)
    proc, port, calibration = start_arm()
    rows = []
    try:
        follower = SO101Follower(port, calibration_path=calibration)
        follower.connect()
        io = FrameIO(follower)
        try:
            for fps in args.rates:
                for inference in (False, True):
                    for realtime in (False, True):
                        r = run(io, fps, realtime, inference, args.seconds)
                        rows.append((fps, inference, realtime, r))
                        print(f"{fps:5.0f} Hz  inference {'small' if inference else 'none ':5s}  realtime "
                              f"{'on ' if realtime else 'off'}  lateness p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} "
                              f"ms  max {r['max']:.2f} ms  overruns {r['overruns']}  chunks {r['chunks']}",
                              flush=True)  # fmt: skip
        finally:
            follower.disconnect()
    finally:
        proc.terminate()
        proc.wait()
    print(f"\ntick lateness of the control loop ({args.seconds:.0f} s per row; the follower's bus I/O is part of "
          "each tick)\n")  # fmt: skip
    print("| rate | inference in the worker | SCHED_FIFO + mlockall | p50 (ms) | p99 (ms) | max (ms) | overruns | "
          "chunks |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for fps, inference, realtime, r in rows:
        print(f"| {fps:.0f} Hz | {'small preset' if inference else 'none'} | {'on' if realtime else 'off'} | "
              f"{r['p50']:.3f} | {r['p99']:.3f} | {r['max']:.2f} | {r['overruns']} | {r['chunks']} |")  # fmt: skip


if __name__ == "__main__":
    main()
