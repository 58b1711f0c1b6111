"""Arms on a serial bus: `Follower` (the policy or a leader drives it) and `Leader` (a person moves it).

    with SO101Follower("/dev/ttyACM0", arm_id="my_arm", on_exit="hold") as arm:
        obs = arm.get_observation()              # {"shoulder_pan.pos": 1.2, ..., "gripper.pos": 35.0}
        sent = arm.send_action({"shoulder_pan.pos": 5.0})   # what was actually sent, after the safety layer

Connecting checks every servo answers with the right model, loads the calibration file (LeRobot's format and
place), writes it into the servos if they hold something else, and applies the servo settings LeRobot applies
(return delay 0, PID gains, gripper torque limits). A follower then switches torque on holding its measured pose.

Leaving the `with` block (normally, on an exception, Ctrl-C, or SIGTERM, which is turned into KeyboardInterrupt
while inside) applies `on_exit`: "hold" keeps torque on at the measured pose, "release" switches torque off (the
arm goes limp). If the port itself is gone nothing can be sent; the servos then keep their last goal.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from vla.hardware.arms import ArmSpec, arm_spec
from vla.hardware.calibration import MotorCalibration, load_calibration, save_calibration
from vla.hardware.errors import BusError, PortGoneError
from vla.hardware.motors import MotorBus
from vla.hardware.safety import SafetyConfig, SafetyFilter
from vla.signals import sigterm_as_interrupt

log = logging.getLogger(__name__)

BODY = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")
# (register, value, joints or None for all): settings written at connect with torque off.
SETTINGS: dict[tuple[str, str], list[tuple[str, int, tuple[str, ...] | None]]] = {
    ("so101", "follower"): [
        ("Return_Delay_Time", 0, None), ("Maximum_Acceleration", 254, None), ("Acceleration", 254, None),
        ("Operating_Mode", 0, None), ("P_Coefficient", 16, None), ("I_Coefficient", 0, None),
        ("D_Coefficient", 32, None), ("Max_Torque_Limit", 500, ("gripper",)),
        ("Protection_Current", 250, ("gripper",)), ("Overload_Torque", 25, ("gripper",)),
    ],
    ("so101", "leader"): [("Return_Delay_Time", 0, None), ("Operating_Mode", 0, None)],
    ("koch", "follower"): [
        ("Return_Delay_Time", 0, None), ("Operating_Mode", 4, BODY),
        ("Operating_Mode", 5, ("gripper",)), ("Position_P_Gain", 1500, ("elbow_flex",)),
        ("Position_I_Gain", 0, ("elbow_flex",)), ("Position_D_Gain", 600, ("elbow_flex",)),
    ],
    ("koch", "leader"): [("Return_Delay_Time", 0, None), ("Operating_Mode", 4, BODY),
                         ("Operating_Mode", 5, ("gripper",))],
}  # fmt: skip


class Arm:
    def __init__(
        self,
        spec: ArmSpec,
        port: str,
        arm_id: str = "default",
        calibration_path: str | Path | None = None,
        baudrate: int = 1_000_000,
        timeout: float = 0.02,
        retries: int = 2,
    ):
        self.spec, self.arm_id = spec, arm_id
        self.calibration_path = Path(calibration_path) if calibration_path else spec.calibration_path(arm_id)
        calibration = load_calibration(self.calibration_path) if self.calibration_path.is_file() else None
        self.bus = MotorBus(port, spec.motors, calibration, baudrate=baudrate, timeout=timeout, retries=retries)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.name} {self.spec.role} '{self.arm_id}' on {self.bus.port_name})"

    @property
    def is_connected(self) -> bool:
        return self.bus.is_connected

    @property
    def is_calibrated(self) -> bool:
        return bool(self.bus.calibration) and self.bus.read_calibration() == self.bus.calibration

    def connect(self, calibrate: bool = False) -> None:
        self.bus.connect()
        try:
            if not self.bus.calibration:
                if not calibrate:
                    raise BusError(f"{self} has no calibration file at {self.calibration_path}; run `lerobot-calibrate`"
                                   f" or `vla calibrate --robot {self.spec.name} --role {self.spec.role} --port "
                                   f"{self.bus.port_name} --id {self.arm_id}`")  # fmt: skip
                self.calibrate()
            self.bus.set_torque(False)
            if self.bus.read_calibration() != self.bus.calibration:
                log.info("%s: writing the calibration from %s into the servos", self, self.calibration_path)
                self.bus.write_calibration(self.bus.calibration)
            for register, value, joints in SETTINGS[(self.spec.name, self.spec.role)]:
                for joint in joints or tuple(self.spec.motors):
                    self.bus.write(register, joint, value)
        except BaseException:
            self.bus.disconnect()
            raise

    def disconnect(self) -> None:
        self.bus.disconnect()

    def positions(self) -> dict[str, float]:
        """Present positions in units, keyed like LeRobot's features (`"<joint>.pos"`)."""
        return {f"{m}.pos": v for m, v in self.bus.sync_read("Present_Position").items()}

    def limits(self) -> dict[str, tuple[float, float]]:
        """Each joint's calibrated range in units, keyed `"<joint>.pos"`."""
        out = {}
        for m, cal in self.bus.calibration.items():
            lo, hi = self.bus.to_units(m, cal.range_min), self.bus.to_units(m, cal.range_max)
            out[f"{m}.pos"] = (min(lo, hi), max(lo, hi))
        return out

    def calibrate(self, ask: Callable[[str], str] = input, say: Callable[[str], None] = print,
                  done: Callable[[], bool] | None = None) -> dict[str, MotorCalibration]:  # fmt: skip
        """LeRobot's procedure: centre the arm (homing offsets), then sweep every joint through its range.

        The wrist roll turns fully, so its range is the whole turn. `done()` (default: ENTER pressed) ends the
        sweep. Writes the result to the servos and to `calibration_path`.
        """
        self.bus.set_torque(False)
        ask(f"Move {self} to the middle of its range of motion and press ENTER...")
        offsets = self.bus.half_turn_homings()
        say("Move every joint except the wrist roll through its whole range; press ENTER to stop.")
        raw = {m: int(v) for m, v in self.bus.sync_read("Present_Position", normalize=False).items()}
        lows, highs = dict(raw), dict(raw)
        finished = done or _enter_pressed
        while not finished():
            for m, v in self.bus.sync_read("Present_Position", normalize=False).items():
                lows[m], highs[m] = min(lows[m], int(v)), max(highs[m], int(v))
            time.sleep(0.02)
        resolution = self.bus.models["wrist_roll"].resolution
        lows["wrist_roll"], highs["wrist_roll"] = 0, resolution - 1
        calibration = {
            m: MotorCalibration(id=motor.id, drive_mode=0, homing_offset=offsets[m], range_min=lows[m],
                                range_max=highs[m])
            for m, motor in self.spec.motors.items()
        }  # fmt: skip
        too_small = [m for m, c in calibration.items() if c.range_max - c.range_min < 50]
        if too_small:
            raise BusError(f"joints {too_small} barely moved during calibration; sweep each through its range")
        self.bus.write_calibration(calibration)
        save_calibration(calibration, self.calibration_path)
        say(f"calibration saved to {self.calibration_path}")
        return calibration


def _enter_pressed() -> bool:
    import select
    import sys

    ready, _, _ = select.select([sys.stdin], [], [], 0)
    return bool(ready) and bool(sys.stdin.readline() or True)


class Follower(Arm):
    def __init__(self, spec: ArmSpec, port: str, arm_id: str = "default", on_exit: str = "hold",
                 safety: SafetyConfig | None = None, **kwargs):  # fmt: skip
        if on_exit not in ("hold", "release"):
            raise ValueError(f"on_exit must be 'hold' or 'release', not '{on_exit}'")
        super().__init__(spec, port, arm_id, **kwargs)
        self.on_exit = on_exit
        self.safety_config = safety or SafetyConfig()
        self.safety: SafetyFilter | None = None

    def connect(self, calibrate: bool = False) -> None:
        super().connect(calibrate)
        try:
            pose = self.positions()
            self.safety = SafetyFilter(self.limits(), self.safety_config)
            self.safety.reset(pose)
            self._write_goals(pose)
            self.bus.set_torque(True)
        except BaseException:
            self.bus.disconnect()
            raise

    def get_observation(self) -> dict[str, float]:
        return self.positions()

    def send_action(self, action: dict[str, float]) -> dict[str, float]:
        """Send goal positions (`"<joint>.pos"` keys, the arm's units) through the safety layer; returns what
        was sent."""
        if self.safety is None:
            raise BusError(f"{self} is not connected")
        sent = self.safety(action)
        self._write_goals(sent)
        return sent

    def _write_goals(self, goals: dict[str, float]) -> None:
        self.bus.sync_write("Goal_Position", {k.removesuffix(".pos"): v for k, v in goals.items()})

    def disconnect(self) -> None:
        """Apply `on_exit`, then close the port."""
        if not self.bus.is_connected:
            return
        try:
            if self.on_exit == "release":
                self.bus.set_torque(False)
            else:
                pose = self.positions()
                self._write_goals(pose)
        except PortGoneError:
            log.error("%s: port gone, cannot apply on_exit=%s; the servos keep their last goal", self, self.on_exit)
        except BusError as err:
            log.error("%s: applying on_exit=%s failed (%s); trying to release torque", self, self.on_exit, err)
            with contextlib.suppress(BusError):
                self.bus.set_torque(False)
        finally:
            self.safety = None
            self.bus.disconnect()

    @contextlib.contextmanager
    def session(self, calibrate: bool = False) -> Iterator[Follower]:
        """Connected for the duration, with SIGTERM handled like Ctrl-C so that `on_exit` always runs."""
        with sigterm_as_interrupt():
            self.connect(calibrate)
            try:
                yield self
            finally:
                self.disconnect()

    def __enter__(self) -> Follower:
        self._session = self.session()
        return self._session.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._session.__exit__(*exc)  # type: ignore[arg-type]


class Leader(Arm):
    """Torque off: a person moves it and `get_action()` reads where to.

    It can also be driven (an actuated leader, as LeRobot's DAgger hand-over uses it): `enable_torque()` holds it
    where it is, `send_feedback(positions)` moves it (goals clamped to its calibrated range), `disable_torque()`
    hands it back to the person. So when a person takes over from the policy, the leader already stands where the
    follower is and nothing jumps."""

    def get_action(self) -> dict[str, float]:
        return self.positions()

    def enable_torque(self) -> None:
        """Hold the present pose (goals first, so switching torque on moves nothing)."""
        self.bus.sync_write("Goal_Position", {k.removesuffix(".pos"): v for k, v in self.positions().items()})
        self.bus.set_torque(True)

    def disable_torque(self) -> None:
        self.bus.set_torque(False)

    def send_feedback(self, positions: dict[str, float]) -> dict[str, float]:
        """Drive the joints named `"<joint>.pos"` to `positions` (the arm's units), clamped to the calibrated
        range; returns the goals written. Needs `enable_torque()` first to move anything."""
        limits = self.limits()
        goals = {k: min(max(float(v), limits[k][0]), limits[k][1]) for k, v in positions.items() if k in limits}
        if goals:
            self.bus.sync_write("Goal_Position", {k.removesuffix(".pos"): v for k, v in goals.items()})
        return goals

    def __enter__(self) -> Leader:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()


def SO101Follower(port: str, arm_id: str = "default", **kwargs) -> Follower:
    return Follower(arm_spec("so101", "follower"), port, arm_id, **kwargs)


def SO101Leader(port: str, arm_id: str = "default", **kwargs) -> Leader:
    return Leader(arm_spec("so101", "leader"), port, arm_id, **kwargs)


def KochFollower(port: str, arm_id: str = "default", **kwargs) -> Follower:
    return Follower(arm_spec("koch", "follower"), port, arm_id, **kwargs)


def KochLeader(port: str, arm_id: str = "default", **kwargs) -> Leader:
    return Leader(arm_spec("koch", "leader"), port, arm_id, **kwargs)


__all__ = ["Arm", "Follower", "KochFollower", "KochLeader", "Leader", "SO101Follower", "SO101Leader"]
