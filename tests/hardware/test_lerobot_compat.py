"""LeRobot is the reference client and the reference for units and calibration files.

LeRobot's own `FeetechMotorsBus` and `DynamixelMotorsBus` (through the vendors' SDKs) connect to our virtual arms,
hand-shake, read and write positions; our tick <-> unit conversion equals LeRobot's; calibration files written by
either side load on the other.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import numpy as np
import pytest

from vla.hardware.arms import arm_spec
from vla.hardware.calibration import MotorCalibration, NormMode, load_calibration, save_calibration, to_ticks, to_units


def lerobot_bus(arm, robot: str):
    from lerobot.motors import Motor, MotorCalibration, MotorNormMode

    spec = arm_spec(robot, "follower")
    motors = {name: Motor(m.id, m.model, MotorNormMode(m.mode.value)) for name, m in spec.motors.items()}
    calibration = {name: MotorCalibration(**asdict(c)) for name, c in load_calibration(arm.calibration_path).items()}
    if robot == "so101":
        from lerobot.motors.feetech import FeetechMotorsBus

        return FeetechMotorsBus(port=arm.port, motors=motors, calibration=calibration)
    from lerobot.motors.dynamixel import DynamixelMotorsBus

    return DynamixelMotorsBus(port=arm.port, motors=motors, calibration=calibration)


@pytest.mark.parametrize("robot", ["so101", "koch"])
def test_lerobot_motors_bus_drives_the_virtual_arm(virtual_arm, robot: str) -> None:
    arm = virtual_arm(robot)
    bus = lerobot_bus(arm, robot)
    bus.connect()  # pings every motor, checks model numbers (and Feetech firmware versions)
    try:
        assert bus.is_calibrated  # the calibration in the servos equals the file the virtual arm wrote
        assert bus.broadcast_ping() is not None if robot == "so101" else True
        twin = np.degrees(arm.joint_positions()[:5])
        read = bus.sync_read("Present_Position")
        np.testing.assert_allclose([read[m] for m in list(read)[:5]], twin, atol=0.3)
        assert bus.read("Model_Number", "gripper", normalize=False) == arm.servos[6].model.model_number

        bus.enable_torque()
        goal = {"shoulder_pan": 15.0, "elbow_flex": 25.0, "gripper": 40.0}
        bus.sync_write("Goal_Position", goal)
        time.sleep(1.5)
        read = bus.sync_read("Present_Position")
        for motor, value in goal.items():
            assert read[motor] == pytest.approx(value, abs=3.0), (motor, read)
    finally:
        bus.disconnect(disable_torque=True)
    assert not arm.servos[1].torque


def lerobot_normalized(mode: NormMode, cal: MotorCalibration, ticks: list[int], model: str, vendor: str):
    from lerobot.motors import Motor, MotorNormMode
    from lerobot.motors import MotorCalibration as LeCal

    motors = {"m": Motor(cal.id, model, MotorNormMode(mode.value))}
    if vendor == "feetech":
        from lerobot.motors.feetech import FeetechMotorsBus as Bus
    else:
        from lerobot.motors.dynamixel import DynamixelMotorsBus as Bus  # type: ignore[assignment]
    bus = Bus(port="unused", motors=motors, calibration={"m": LeCal(**asdict(cal))})
    return [bus._normalize({cal.id: t})[cal.id] for t in ticks], bus


@pytest.mark.parametrize("vendor,model", [("feetech", "sts3215"), ("dynamixel", "xl330-m288")])
@pytest.mark.parametrize("mode", list(NormMode))
@pytest.mark.parametrize("drive_mode", [0, 1])
def test_units_equal_lerobot(vendor: str, model: str, mode: NormMode, drive_mode: int) -> None:
    cal = MotorCalibration(id=3, drive_mode=drive_mode, homing_offset=-120, range_min=900, range_max=3100)
    ticks = [0, 899, 900, 1500, 2000, 2047, 2048, 3100, 3500, 4095]
    theirs, bus = lerobot_normalized(mode, cal, ticks, model, vendor)
    drive = vendor == "feetech"  # Dynamixel reverses in the servo (Drive_Mode register), not in software
    ours = [to_units(t, cal, mode, 4096, drive) for t in ticks]
    np.testing.assert_allclose(ours, theirs, atol=1e-9)
    # and back: within one tick of LeRobot's unnormalize (it truncates, we round)
    for value in theirs:
        back = bus._unnormalize({cal.id: value})[cal.id]
        assert abs(to_ticks(value, cal, mode, 4096, drive) - back) <= 1


def test_calibration_files_are_interchangeable_with_lerobot(tmp_path) -> None:
    import draccus
    from lerobot.motors import MotorCalibration as LeCal

    theirs = {"shoulder_pan": LeCal(id=1, drive_mode=0, homing_offset=-35, range_min=700, range_max=3300),
              "gripper": LeCal(id=6, drive_mode=1, homing_offset=12, range_min=2000, range_max=3400)}  # fmt: skip
    path = tmp_path / "lerobot.json"
    with open(path, "w") as f, draccus.config_type("json"):  # how LeRobot's Robot._save_calibration writes
        draccus.dump(theirs, f, indent=4)
    loaded = load_calibration(path)
    assert {k: asdict(v) for k, v in loaded.items()} == {k: asdict(v) for k, v in theirs.items()}

    save_calibration(loaded, tmp_path / "ours.json")
    with open(tmp_path / "ours.json") as f, draccus.config_type("json"):  # how LeRobot's Robot loads one
        back = draccus.load(dict[str, LeCal], f)
    assert back == theirs
    assert json.loads((tmp_path / "ours.json").read_text()) == json.loads(path.read_text())


def test_bad_calibration_files_get_clear_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="calibrate the arm first"):
        load_calibration(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_calibration(tmp_path / "bad.json")
    (tmp_path / "fields.json").write_text('{"gripper": {"id": 6}}')
    with pytest.raises(ValueError, match="entry 'gripper' must have exactly the fields"):
        load_calibration(tmp_path / "fields.json")
