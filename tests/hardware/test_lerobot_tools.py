"""LeRobot's own command drives our arms: `lerobot-teleoperate` with `vla_so101_leader` -> `vla_so101_follower`,
both virtual arms on pseudo-terminals; the follower ends up where the (moving) leader is."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vla.hardware.robots import SO101Follower


def arm_pair(virtual_arm, tmp_path: Path) -> tuple[Any, Any, list[str]]:  # type: ignore[no-untyped-def]
    """A virtual SO-101 follower and leader, their calibration files where LeRobot looks, and the CLI options
    that name them as our LeRobot types."""
    follower = virtual_arm("so101")
    leader = virtual_arm("so101", role="leader")
    for arm, name in ((follower, "robot"), (leader, "teleop")):
        (tmp_path / name).mkdir()
        shutil.copy(arm.calibration_path, tmp_path / name / "virtual.json")
    options = [
        "--robot.type=vla_so101_follower", f"--robot.port={follower.port}", "--robot.id=virtual",
        f"--robot.calibration_dir={tmp_path / 'robot'}",
        "--teleop.type=vla_so101_leader", f"--teleop.port={leader.port}", "--teleop.id=virtual",
        f"--teleop.calibration_dir={tmp_path / 'teleop'}",
    ]  # fmt: skip
    return follower, leader, options


@pytest.mark.slow
def test_lerobot_teleoperate_with_our_leader_and_follower(virtual_arm, tmp_path: Path) -> None:
    follower, leader, options = arm_pair(virtual_arm, tmp_path)
    cmd = [str(Path(sys.executable).with_name("lerobot-teleoperate")), *options, "--robot.max_step=20", "--fps=30",
           "--teleop_time_s=4"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    rest = np.degrees(follower.joint_positions())
    hand = leader.twin.hand
    assert hand is not None
    # The operator holds the leader still until the loop runs, moves it for 30 ticks (a second), then stops. Were it
    # moving from the start, the follower's first move would depend on how long the command took to start, and some
    # straight joint-space moves from the follower's rest pose drag its jaw along the table and jam it, as they would
    # a real arm.
    hand.freeze()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120

    def wait(until) -> None:  # type: ignore[no-untyped-def]
        while not until() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)

    wait(lambda: follower.requests > 0)  # LeRobot connects the leader, then the follower, then loops
    connected = leader.requests  # one read of the leader per tick from here on
    wait(lambda: leader.requests > connected)
    hand.resume()
    wait(lambda: leader.requests > connected + 30)
    hand.freeze()  # the follower has the rest of the 4 s to catch up
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-4000:]
    assert follower.servos[1].torque  # on_exit=hold by default

    lead, follow = np.degrees(leader.joint_positions()), np.degrees(follower.joint_positions())
    assert np.abs(follow - rest).max() > 10.0  # it moved away from its rest pose to the leader's
    # degrees: the shoulder and elbow of a P-controlled position servo sag a few degrees under gravity
    np.testing.assert_allclose(follow[:5], lead[:5], atol=5.0)
    with SO101Follower(follower.port, calibration_path=follower.calibration_path) as ours:  # and it is ours again
        assert math.isfinite(ours.get_observation()["shoulder_pan.pos"])


@pytest.mark.slow
def test_lerobot_record_with_our_leader_and_follower(virtual_arm, tmp_path: Path) -> None:
    """`lerobot-record` writes a dataset from our follower (observations) and leader (actions)."""
    from lerobot.datasets import LeRobotDataset

    _, _, options = arm_pair(virtual_arm, tmp_path)
    cmd = [
        str(Path(sys.executable).with_name("lerobot-record")), *options,
        "--dataset.repo_id=local/recorded", f"--dataset.root={tmp_path / 'rec'}", "--dataset.num_episodes=1",
        "--dataset.episode_time_s=2", "--dataset.reset_time_s=0", "--dataset.single_task=follow the leader",
        "--dataset.fps=30", "--dataset.push_to_hub=false", "--display_data=false", "--play_sounds=false",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    ds = LeRobotDataset("local/recorded", root=tmp_path / "rec")
    assert ds.meta.total_episodes == 1 and 40 <= ds.meta.total_frames <= 61  # 2 s at 30 fps, less if it lagged
    assert ds.meta.features["action"]["names"][0] == "shoulder_pan.pos"
    actions = np.stack([ds[i]["action"].numpy() for i in range(ds.meta.total_frames)])
    states = np.stack([ds[i]["observation.state"].numpy() for i in range(ds.meta.total_frames)])
    assert np.ptp(actions[:, 0]) > 1.0  # the scripted hand moved the leader while recording
    assert np.isfinite(states).all() and np.abs(states[-1, :5] - actions[-1, :5]).max() < 30.0


def test_dagger_handover_drives_our_leader_to_the_follower(virtual_arm, tmp_path: Path) -> None:
    """LeRobot 0.6.1's DAgger (lerobot-rollout --strategy.type=dagger) pauses the policy, drives an actuated leader
    to the follower's last action with `teleop_smooth_move_to`, then releases it for the person: our leader
    qualifies as actuated and ends where the follower is, so the take-over starts without a jump."""
    from lerobot.common.control_utils import teleop_smooth_move_to, teleop_supports_feedback
    from lerobot.robots import make_robot_from_config
    from lerobot.teleoperators import make_teleoperator_from_config

    import lerobot_policy_vla  # noqa: F401  (registers the types, as LeRobot's commands do)
    from vla.hardware.lerobot.config import VLASO101FollowerConfig, VLASO101LeaderConfig

    follower_arm, leader_arm, _ = arm_pair(virtual_arm, tmp_path)
    robot = make_robot_from_config(VLASO101FollowerConfig(port=follower_arm.port, id="virtual",
                                                          calibration_dir=tmp_path / "robot"))  # fmt: skip
    teleop = make_teleoperator_from_config(VLASO101LeaderConfig(port=leader_arm.port, id="virtual",
                                                                calibration_dir=tmp_path / "teleop"))  # fmt: skip
    robot.connect()
    teleop.connect()
    try:
        assert teleop_supports_feedback(teleop)
        target = {k: v + (15.0 if k == "elbow_flex.pos" else 0.0) for k, v in robot.get_observation().items()
                  if k.endswith(".pos")}  # fmt: skip
        last_action = robot.send_action(target)  # the policy's last action before the pause
        time.sleep(1.0)
        leader_arm.twin.hand.freeze()  # the person lets go of the leader
        teleop_smooth_move_to(teleop, last_action, duration_s=1.0)
        time.sleep(0.5)
        lead, follow = teleop.get_action(), robot.get_observation()
        for key in ("shoulder_pan.pos", "elbow_flex.pos", "wrist_flex.pos", "wrist_roll.pos"):
            assert abs(lead[key] - last_action[key]) < 3.0, (key, lead[key], last_action[key])  # where it was sent
            # and so where the follower stands, up to the few degrees its servos sag under gravity
            assert abs(lead[key] - follow[key]) < 8.0, (key, lead[key], follow[key])
        assert all(servo.torque for servo in leader_arm.servos.values())  # held there until the take-over
        teleop.disable_torque()  # CORRECTING: the person moves it again
        assert not any(servo.torque for servo in leader_arm.servos.values())
    finally:
        teleop.disconnect()
        robot.disconnect()


@pytest.mark.slow
def test_lerobot_calibrate_with_our_leader(virtual_arm, tmp_path: Path) -> None:
    """`lerobot-calibrate --teleop.type=vla_so101_leader` runs our calibration (ENTER to centre, the hand sweeps the
    joints, ENTER to stop) and writes LeRobot's calibration file, which our leader then uses."""
    from vla.hardware.robots import SO101Leader

    arm = virtual_arm("so101", role="leader")
    cmd = [str(Path(sys.executable).with_name("lerobot-calibrate")), "--teleop.type=vla_so101_leader",
           f"--teleop.port={arm.port}", "--teleop.id=fresh", f"--teleop.calibration_dir={tmp_path}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    seen = b""

    def wait_for(text: bytes) -> None:
        nonlocal seen
        deadline = time.monotonic() + 120
        while text not in seen and time.monotonic() < deadline and proc.poll() is None:
            seen += os.read(proc.stdout.fileno(), 4096)  # type: ignore[union-attr]

    wait_for(b"middle of its range")  # LeRobot started, connected our leader and asks to centre the arm
    proc.stdin.write(b"\n")
    proc.stdin.flush()
    wait_for(b"press ENTER to stop")
    # the scripted hand sweeps the joints meanwhile: slow sinusoids, so how far a joint gets in a fixed time depends
    # on where in its wave the recording starts; stop once each swept joint has covered twice the 50 steps that
    # calibration asks for (wrist roll is not swept), or after 30 s
    swept = {name: arm.servos[motor.id] for name, motor in arm.spec.motors.items() if name != "wrist_roll"}
    low = {name: servo.present_position() for name, servo in swept.items()}
    high = dict(low)
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline and any(high[n] - low[n] < 100 for n in swept):
        time.sleep(0.05)
        for name, servo in swept.items():
            position = servo.present_position()
            low[name], high[name] = min(low[name], position), max(high[name], position)
    rest, _ = proc.communicate(b"\n", timeout=120)
    out = (seen + rest).decode(errors="replace")
    assert proc.returncode == 0, out[-4000:]
    assert (tmp_path / "fresh.json").is_file(), out[-4000:]
    with SO101Leader(arm.port, calibration_path=tmp_path / "fresh.json") as leader:
        assert set(leader.get_action()) == {f"{j}.pos" for j in ("shoulder_pan", "shoulder_lift", "elbow_flex",
                                                                 "wrist_flex", "wrist_roll", "gripper")}
