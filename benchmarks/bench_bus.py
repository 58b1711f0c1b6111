"""Servo-bus round trips: ours vs the Feetech SDK (scservo_sdk) vs LeRobot's FeetechMotorsBus, in one run.

    .venv/bin/python benchmarks/bench_bus.py [--iterations 2000] [--rounds 3]

One iteration = a sync read of Present_Position from 6 servos plus a sync write of Goal_Position to them, the
control loop's per-tick bus traffic. All three clients talk to the same virtual SO-101 (`vla virtual-arm`, in its
own process, motor-model twin) emulating a 1 Mbps bus (replies timed by their bytes on the wire; return delay set
to 0 as every client's configuration does). Reported per client: p50 / p99 / max round trip, and the CPU time the
client process used per unit of wall time during the loop (a client that sleeps while waiting uses little; one
that polls in a loop uses a whole core), and for ours the CPU used inside the wait alone. Clients run in rounds,
interleaved, and the tables report medians over rounds.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

IDS = [1, 2, 3, 4, 5, 6]
ADDR_PRESENT, ADDR_GOAL = 56, 42


def start_virtual_arm() -> tuple[subprocess.Popen, str]:
    vla = str(Path(sys.executable).with_name("vla"))
    proc = subprocess.Popen([vla, "virtual-arm", "--twin", "motor"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.match(r"virtual so101 follower on (\S+)", line)
        if match:
            return proc, match.group(1)
    raise RuntimeError("vla virtual-arm did not print its port")


def ours(port: str) -> tuple[Callable[[], None], Callable[[], None]]:
    from vla.hardware.bus import ServoBus
    from vla.hardware.protocol import FeetechProtocol

    bus = ServoBus(port, FeetechProtocol())
    for i in IDS:
        bus.write(i, 7, 0, 1)  # Return_Delay_Time = 0, as the follower's configuration sets it
    goals = {i: 2048 for i in IDS}
    read_until = bus.port.read_until

    def timed_read(n: int, deadline: float, not_before: float = 0.0) -> bytes:
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return read_until(n, deadline, not_before)
        finally:
            WAIT["cpu"] += time.thread_time() - cpu
            WAIT["wall"] += time.perf_counter() - wall

    bus.port.read_until = timed_read  # type: ignore[method-assign]

    def tick() -> None:
        bus.sync_read(IDS, ADDR_PRESENT, 2)
        bus.sync_write(ADDR_GOAL, 2, goals)

    return tick, bus.close


WAIT = {"cpu": 0.0, "wall": 0.0}  # our bus: CPU and wall time spent inside the wait for replies


def scservo(port: str) -> tuple[Callable[[], None], Callable[[], None]]:
    import scservo_sdk as scs

    handler = scs.PortHandler(port)
    handler.openPort()
    handler.setBaudRate(1_000_000)
    packets = scs.PacketHandler(0)
    reader = scs.GroupSyncRead(handler, packets, ADDR_PRESENT, 2)
    for i in IDS:
        reader.addParam(i)
    writer = scs.GroupSyncWrite(handler, packets, ADDR_GOAL, 2)
    for i in IDS:
        writer.addParam(i, [0x00, 0x08])

    def tick() -> None:
        if reader.txRxPacket() != scs.COMM_SUCCESS:
            raise RuntimeError("scservo_sdk sync read failed")
        writer.txPacket()

    return tick, handler.closePort


def lerobot(port: str) -> tuple[Callable[[], None], Callable[[], None]]:
    from lerobot.motors import Motor, MotorNormMode
    from lerobot.motors.feetech import FeetechMotorsBus

    names = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
    motors = {n: Motor(i, "sts3215", MotorNormMode.DEGREES) for n, i in zip(names, IDS, strict=True)}
    bus = FeetechMotorsBus(port, motors)
    bus.connect()
    goals = dict.fromkeys(names, 2048)

    def tick() -> None:
        bus.sync_read("Present_Position", normalize=False)
        bus.sync_write("Goal_Position", goals, normalize=False)

    return tick, lambda: bus.disconnect(disable_torque=False)


def measure(tick: Callable[[], None], iterations: int) -> dict[str, float]:
    for _ in range(50):
        tick()
    times = np.empty(iterations)
    failures = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for k in range(iterations):
        t = time.perf_counter()
        try:
            tick()
        except Exception:  # a failed round trip counts, and is reported, but does not end the benchmark
            failures += 1
        times[k] = time.perf_counter() - t
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"p50": float(np.percentile(times, 50) * 1e3), "p99": float(np.percentile(times, 99) * 1e3),
            "max": float(times.max() * 1e3), "cpu": cpu / wall * 100, "failures": failures}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    proc, port = start_virtual_arm()
    clients = {"ours (vla.hardware)": ours, "scservo_sdk 1.0.0": scservo, "LeRobot 0.4.4 FeetechMotorsBus": lerobot}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in clients}
    try:
        for r in range(args.rounds):
            for name, make in clients.items():
                tick, close = make(port)
                try:
                    results[name].append(measure(tick, args.iterations))
                finally:
                    close()
                row = results[name][-1]
                print(f"round {r + 1}: {name:32s} p50 {row['p50']:.3f} ms  p99 {row['p99']:.3f} ms  max "
                      f"{row['max']:.2f} ms  cpu {row['cpu']:.0f}%  failed {row['failures']}", flush=True)  # fmt: skip
    finally:
        proc.terminate()
        proc.wait()

    print(f"\nours, while waiting for replies: {WAIT['cpu'] / WAIT['wall'] * 100:.1f}% of a core "
          f"({WAIT['cpu'] / WAIT['wall'] * 1e3:.0f} us of CPU per ms waited); the rest of its CPU builds and parses "
          "packets. The SDKs spin while they wait: their CPU figure is mostly the wait.")  # fmt: skip
    base = statistics.median(r["p50"] for r in results["ours (vla.hardware)"])
    print(f"\nsync read 6 + sync write 6 at an emulated 1 Mbps, {args.iterations} iterations x {args.rounds} rounds "
          "(medians over rounds)\n")  # fmt: skip
    print("| client | p50 (ms) | p99 (ms) | max (ms) | CPU (% of a core) | failed round trips | p50 vs ours |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        failed = sum(r["failures"] for r in rows)
        print(f"| {name} | {med['p50']:.3f} | {med['p99']:.3f} | {med['max']:.2f} | {med['cpu']:.0f} | {failed} | "
              f"{med['p50'] / base:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
