"""Followers and leaders end to end: our driver -> pseudo-terminal -> virtual servos -> twin, and back.

A trajectory sent through the follower arrives at the MuJoCo twin; the safety layer rejects, clamps and
rate-limits; `on_exit` is applied on exceptions and on SIGTERM; calibration runs against a moving leader.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from vla.hardware.errors import BusError, UnsafeActionError
from vla.hardware.robots import KochFollower, KochLeader, SO101Follower, SO101Leader
from vla.hardware.safety import SafetyConfig, SafetyFilter

BODY = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")


def twin_units(arm) -> dict[str, float]:
    """The twin's joints in the sim's units (degrees; gripper 0-100 over the joint range)."""
    q = arm.joint_positions()
    lo, hi = arm.twin.ranges[5]
    return {**{f"{j}.pos": math.degrees(q[i]) for i, j in enumerate(BODY)},
            "gripper.pos": (q[5] - lo) / (hi - lo) * 100}  # fmt: skip


@pytest.mark.parametrize("robot", ["so101", "koch"])
def test_trajectory_through_follower_reaches_the_twin(virtual_arm, robot: str) -> None:
    arm = virtual_arm(robot)
    make = SO101Follower if robot == "so101" else KochFollower
    with make(arm.port, calibration_path=arm.calibration_path, safety=SafetyConfig(max_step=3.0)) as follower:
        start = follower.get_observation()
        for key, value in twin_units(arm).items():  # units agree with the sim's at rest
            assert start[key] == pytest.approx(value, abs=0.3), key
        errors = []
        t0 = time.monotonic()
        for tick in range(75):  # 2.5 s at 30 Hz: a slow sweep of three joints and the gripper
            s = tick / 30.0
            target = dict(start)
            target["shoulder_pan.pos"] = 25 * math.sin(1.2 * s)
            target["elbow_flex.pos"] = start["elbow_flex.pos"] - 15 * math.sin(0.8 * s)
            target["wrist_roll.pos"] = 40 * math.sin(0.6 * s)
            target["gripper.pos"] = start["gripper.pos"] + 15 * math.sin(s)
            sent = follower.send_action(target)
            assert sent == pytest.approx(target, abs=1e-9)  # within limits and step: sent unchanged
            if tick >= 15:
                obs = follower.get_observation()
                errors.append(max(abs(obs[k] - target[k]) for k in target))
            time.sleep(max(0.0, t0 + (tick + 1) / 30 - time.monotonic()))
        # a position servo lags a moving target by a few degrees; the twin must agree with what we read
        assert np.median(errors) < 5.0, errors
        final = follower.get_observation()
        for key, value in twin_units(arm).items():
            assert final[key] == pytest.approx(value, abs=0.5), key


def test_safety_layer_rejects_clamps_and_rate_limits(virtual_arm) -> None:
    arm = virtual_arm("so101", twin="motor")
    with SO101Follower(arm.port, calibration_path=arm.calibration_path,
                       safety=SafetyConfig(max_step=4.0, max_velocity=None)) as follower:  # fmt: skip
        pose = follower.get_observation()
        goals_before = [s._get("Goal_Position") for s in arm.servos.values()]
        with pytest.raises(UnsafeActionError, match=r"non-finite values for \['elbow_flex.pos'\]"):
            follower.send_action({**pose, "elbow_flex.pos": float("nan")})
        with pytest.raises(UnsafeActionError, match="unknown joint"):
            follower.send_action({"elbow.pos": 1.0})
        assert [s._get("Goal_Position") for s in arm.servos.values()] == goals_before  # nothing was sent

        limits = follower.limits()
        sent = follower.send_action({"shoulder_pan.pos": pose["shoulder_pan.pos"] + 50.0})
        assert sent["shoulder_pan.pos"] == pytest.approx(pose["shoulder_pan.pos"] + 4.0)  # one step of 4 degrees
        assert sent["elbow_flex.pos"] == pytest.approx(pose["elbow_flex.pos"])  # missing joints hold
        for _ in range(200):
            sent = follower.send_action({"shoulder_pan.pos": 1000.0})
        assert sent["shoulder_pan.pos"] == pytest.approx(limits["shoulder_pan.pos"][1])
        assert follower.safety is not None and follower.safety.last_report.clamped == ["shoulder_pan.pos"]
        time.sleep(0.3)
        assert follower.get_observation()["shoulder_pan.pos"] <= limits["shoulder_pan.pos"][1] + 0.5


def test_velocity_limit_uses_the_measured_period() -> None:
    f = SafetyFilter({"a": (-90.0, 90.0)}, SafetyConfig(max_step=None, max_velocity=60.0))
    f.reset({"a": 0.0})
    t = f._last_time
    assert f({"a": 30.0}, now=t + 0.1)["a"] == pytest.approx(6.0)
    assert f({"a": 30.0}, now=t + 0.6)["a"] == pytest.approx(30.0)


@pytest.mark.parametrize("on_exit", ["hold", "release"])
def test_on_exit_is_applied_when_the_loop_raises(virtual_arm, on_exit: str) -> None:
    arm = virtual_arm("so101", twin="motor")
    follower = SO101Follower(arm.port, calibration_path=arm.calibration_path, on_exit=on_exit)
    with pytest.raises(RuntimeError, match="policy crashed"), follower:
        follower.send_action({"shoulder_pan.pos": 5.0})
        raise RuntimeError("policy crashed")
    assert not follower.is_connected
    torque = [s.torque for s in arm.servos.values()]
    if on_exit == "release":
        assert not any(torque)
    else:  # torque on, and the arm stops where it was (it was moving when the loop raised)
        assert all(torque)
        time.sleep(0.1)
        before = [s.present_position() for s in arm.servos.values()]
        time.sleep(0.3)
        assert [s.present_position() for s in arm.servos.values()] == before
        for s in arm.servos.values():
            assert abs(s._get("Goal_Position") - s.present_position()) <= 10  # within 1 degree of the goal


def test_on_exit_is_applied_on_sigterm(virtual_arm) -> None:
    arm = virtual_arm("so101", twin="motor")
    script = textwrap.dedent(f"""
        import sys, time
        from vla.hardware.robots import SO101Follower
        with SO101Follower({arm.port!r}, calibration_path={str(arm.calibration_path)!r}, on_exit="release") as f:
            print("connected", flush=True)
            while True:
                f.send_action(f.get_observation())
                time.sleep(1 / 30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "connected"
    assert all(s.torque for s in arm.servos.values())
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    assert not any(s.torque for s in arm.servos.values()), proc.stderr.read() if proc.stderr else ""


def test_leader_reads_a_moving_arm_and_calibration_runs_against_it(virtual_arm, tmp_path) -> None:
    arm = virtual_arm("so101", role="leader")
    with SO101Leader(arm.port, calibration_path=arm.calibration_path) as leader:
        a = leader.get_action()
        time.sleep(0.3)
        b = leader.get_action()
        assert a.keys() == b.keys() and any(abs(a[k] - b[k]) > 0.5 for k in a)  # a person is moving it
        assert not any(s.torque for s in arm.servos.values())

    fresh = SO101Leader(arm.port, calibration_path=tmp_path / "new.json")
    with pytest.raises(BusError, match="no calibration file"):
        fresh.connect()
    end = time.monotonic() + 3.0
    fresh.bus.connect()
    calibration = fresh.calibrate(ask=lambda prompt: "", say=lambda text: None, done=lambda: time.monotonic() > end)
    fresh.disconnect()
    assert (tmp_path / "new.json").is_file()
    assert calibration["wrist_roll"].range_min == 0 and calibration["wrist_roll"].range_max == 4095
    for name in ("shoulder_pan", "elbow_flex", "gripper"):  # the hand swept them over part of their range
        assert calibration[name].range_max - calibration[name].range_min > 100, (name, calibration[name])
    with SO101Leader(arm.port, calibration_path=tmp_path / "new.json") as again:  # the new file is used
        assert set(again.get_action()) == {f"{j}.pos" for j in (*BODY, "gripper")}
        assert again.bus.read_calibration() == calibration


def test_koch_leader_reads_degrees(virtual_arm) -> None:
    arm = virtual_arm("koch", role="leader")
    with KochLeader(arm.port, calibration_path=arm.calibration_path) as leader:
        action = leader.get_action()
    q = np.degrees(arm.joint_positions())
    assert action["shoulder_pan.pos"] == pytest.approx(q[0], abs=3.0)  # the hand keeps moving meanwhile


def test_missing_servos_are_listed(virtual_arm) -> None:
    arm = virtual_arm("so101", twin="motor")
    follower = KochFollower(arm.port, calibration_path=arm.calibration_path, timeout=0.005, retries=0)
    with pytest.raises(BusError, match=r"'shoulder_pan' \(id 1\) does not answer.*'gripper' \(id 6\)"):
        follower.connect()
