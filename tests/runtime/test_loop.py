"""The control loop end to end without hardware: inference worker process -> loop -> our follower -> pseudo-terminal
-> virtual SO-101 (MuJoCo twin of the reach scene, cameras in shared memory), and the watchdog and handovers."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from vla.envs.registry import task_scene
from vla.hardware.robots import SO101Follower, SO101Leader
from vla.hardware.safety import SafetyConfig
from vla.runtime.io import FollowerIO, LeaderIO, SharedFrames
from vla.runtime.loop import HOLD, HUMAN, POLICY, ControlLoop, LoopConfig
from vla.runtime.policy import PolicySpec
from vla.runtime.worker import InferenceWorker, PolicySource

STEP = 4.0  # the follower's per-tick step limit in these tests (degrees, gripper units)


def scripted(names: tuple[str, ...], latency: float, chunk: int = 30, error: str = "") -> PolicySource:
    spec = PolicySpec(chunk_size=chunk, action_names=tuple(names), state_names=tuple(names),
                      cameras={"front": (96, 96), "wrist": (96, 96)}, fps=30.0, supports_prefix=True)
    return PolicySource("scripted", latency=latency, spec=spec, error=error)


@pytest.fixture
def rig(virtual_arm):
    """A virtual follower in the reach scene, our follower on its port, and its cameras."""
    arm = virtual_arm("so101", scene=task_scene("reach", seed=1))
    follower = SO101Follower(arm.port, calibration_path=arm.calibration_path, on_exit="hold",
                             safety=SafetyConfig(max_step=STEP, max_velocity=None))  # fmt: skip
    follower.connect()
    frames = SharedFrames(arm.frames_layout)
    yield arm, follower, FollowerIO(follower, frames)
    frames.close()
    follower.disconnect()


def start_worker(io: FollowerIO, latency: float = 0.05, error: str = "") -> InferenceWorker:
    worker = InferenceWorker(scripted(io.names, latency, error=error), state_dim=len(io.names),
                             cameras={"front": (96, 96), "wrist": (96, 96)},
                             task="move the gripper to the red marker")  # fmt: skip
    worker.start(timeout=60)
    return worker


def test_policy_drives_the_virtual_arm_at_30_hz(rig) -> None:
    arm, follower, io = rig
    worker = start_worker(io)
    try:
        log = ControlLoop(io, worker, LoopConfig(fps=30, strategy="rtc", realtime=False)).run(duration_s=3.0)
    finally:
        worker.stop()
    data = log.arrays()
    assert len(data["t"]) == 90 and log.stop_reason == "duration"  # every tick sent an action
    assert np.abs(np.diff(data["command"], axis=0)).max() <= STEP + 1e-4  # never more than the step limit
    assert (data["source"] == POLICY).mean() > 0.8 and len(log.chunk_latency_s) >= 3
    assert np.median(data["lateness"]) < 0.005
    # the arm moved as commanded: the measured pose follows the command a few ticks later
    cmd, meas = data["command"][:-5, :5], data["measured"][5:, :5]
    assert np.ptp(cmd, axis=0).max() > 5.0  # it was asked to move
    assert np.median(np.abs(cmd - meas)) < 2.5, np.abs(cmd - meas).max(axis=0)
    twin = np.degrees(arm.joint_positions()[:5])
    np.testing.assert_allclose(follower.get_observation()["shoulder_pan.pos"], twin[0], atol=0.5)


def test_watchdog_holds_then_releases_when_the_worker_dies(rig) -> None:
    arm, _follower, io = rig
    worker = start_worker(io)
    loop = ControlLoop(io, worker, LoopConfig(fps=30, strategy="rtc", safe_after_s=0.5, safe_state="release",
                                              realtime=False))  # fmt: skip
    killer = threading.Timer(1.0, worker.process.kill)
    killer.start()
    try:
        log = loop.run(duration_s=6.0)
    finally:
        killer.cancel()
        worker.stop()
    data = log.arrays()
    assert log.stop_reason == "watchdog" and 1.3 < data["t"][-1] < 3.0, (log.stop_reason, data["t"][-1])
    assert (data["source"][-10:] == HOLD).all()  # held still before giving up
    assert np.abs(np.diff(data["command"][-10:], axis=0)).max() < 1e-6
    assert any("died" in e for _, e in log.events) and any("watchdog" in e for _, e in log.events)
    assert not any(s.torque for s in arm.servos.values())  # the configured safe state: released


def test_handover_in_both_directions_blends_without_jumps(rig, virtual_arm) -> None:
    _arm, follower, io = rig
    leader_arm = virtual_arm("so101", role="leader", seed=3)
    hand = leader_arm.twin.hand
    leader = SO101Leader(leader_arm.port, calibration_path=leader_arm.calibration_path)
    leader.connect()
    worker = start_worker(io)
    limited: list[int] = []

    def watch(tick, state, frames, command, source) -> None:
        if follower.safety is not None and follower.safety.last_report.rate_limited:
            limited.append(tick)

    loop = ControlLoop(io, worker, LoopConfig(fps=30, strategy="rtc", blend_s=0.5, realtime=False),
                       teleop=LeaderIO(leader), on_tick=watch)  # fmt: skip

    def script() -> None:
        time.sleep(1.5)
        hand.freeze()  # the operator lets go of the leader ...
        loop.request_mode("policy")  # ... and hands over with the key
        time.sleep(2.0)
        hand.resume()  # then grabs the leader again: the operator takes over
    operator = threading.Thread(target=script)
    operator.start()
    try:
        log = loop.run(duration_s=6.0)
    finally:
        operator.join()
        worker.stop()
        leader.disconnect()
    data = log.arrays()
    sources = data["source"]
    to_policy = int(np.argmax(sources != HUMAN))
    back = to_policy + int(np.argmax(sources[to_policy:] == HUMAN))
    assert 30 < to_policy < back < len(sources) - 15, (to_policy, back)
    assert any("operator took over" in e for _, e in log.events)
    steps = np.abs(np.diff(data["command"], axis=0)).max(axis=1)
    assert steps.max() <= STEP + 1e-4
    # the blend, not the safety clamp, made both handovers smooth
    for start in (to_policy, back):
        assert not [t for t in limited if start <= t < start + 15], (start, limited)


def test_killing_the_policy_server_triggers_the_watchdog(rig, tmp_path) -> None:
    """The policy runs behind `vla serve` (the remote-GPU setup); the server dies mid-run: the loop holds, then
    applies the safe state, and never stalls on the dead connection."""
    from runtime_helpers import spawn_server

    arm, _follower, io = rig
    server, url = spawn_server("--policy", "scripted", "--port", "0", "--camera", "front:96x96", "--camera",
                               "wrist:96x96", "--chunk-size", "30", log=tmp_path / "server.log")  # fmt: skip
    try:
        worker = InferenceWorker(PolicySource("remote", path=url), state_dim=6,
                                 cameras={"front": (96, 96), "wrist": (96, 96)}, task="reach")  # fmt: skip
        worker.start(timeout=60)
        loop = ControlLoop(io, worker, LoopConfig(fps=30, strategy="rtc", safe_after_s=0.5, safe_state="release",
                                                  realtime=False))  # fmt: skip
        killer = threading.Timer(1.0, server.kill)
        killer.start()
        try:
            log = loop.run(duration_s=8.0)
        finally:
            killer.cancel()
            worker.stop()
    finally:
        server.kill()
        server.wait()
    data = log.arrays()
    assert (data["source"][:25] == POLICY).mean() > 0.5  # it was driving through the server
    assert log.stop_reason == "watchdog" and data["t"][-1] < 4.0, (log.stop_reason, data["t"][-1])
    assert any("inference failed" in e for _, e in log.events)
    assert np.abs(np.diff(data["lateness"])).max() < 0.05  # the dead server never stalled a tick
    assert not any(s.torque for s in arm.servos.values())


def test_a_failing_policy_is_logged_once_counted_and_reported(rig) -> None:
    _arm, _follower, io = rig
    worker = start_worker(io, latency=0.02, error="CUDA out of memory (simulated) " + "x" * 300)
    loop = ControlLoop(io, worker, LoopConfig(fps=30, strategy="sync", safe_after_s=30.0, realtime=False))
    try:
        log = loop.run(duration_s=2.0)
    finally:
        worker.stop()
    failures = [e for _, e in log.events if e.startswith("inference failed")]
    assert len(failures) == 1 and failures[0].endswith("x" * 300)  # the first error whole, once
    assert sum(log.inference_errors.values()) > 10  # the repeats are counted, not logged
    reason = log.policy_failure()
    assert reason is not None and "0 chunk(s)" in reason and "CUDA out of memory" in reason


def test_a_working_policy_is_not_reported_as_failed(rig) -> None:
    _arm, _follower, io = rig
    worker = start_worker(io)
    try:
        log = ControlLoop(io, worker, LoopConfig(fps=30, strategy="sync", realtime=False)).run(duration_s=1.5)
    finally:
        worker.stop()
    assert log.chunk_latency_s and log.policy_failure() is None

