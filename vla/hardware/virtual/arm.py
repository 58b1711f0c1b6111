"""A virtual SO-101 (Feetech STS3215) or Koch (Dynamixel X) arm on a pseudo-terminal.

    arm = VirtualArm("so101").start()      # or: vla virtual-arm --robot so101
    arm.port                               # "/dev/pts/7": open it like the arm's USB serial port
    arm.calibration_path                   # a LeRobot calibration file that matches the twin (`<arm_id>.json`)

Behind the port a thread parses instruction packets and answers as the servos would, byte for byte: status packets
in id order for sync reads and broadcast pings, no reply to sync writes, acknowledgements according to the status
return level. Replies are timed as on a real bus at `baudrate` (10 bits per byte for the request and every reply,
plus each servo's return delay), since the pseudo-terminal itself moves bytes instantly. Joint positions come from
the twin (`vla.hardware.virtual.twin`); faults come from `Faults`.

The arm starts calibrated: homing offsets and position limits in its servos equal the calibration file it writes,
chosen so that its degrees are the simulation's degrees (0 in the middle of each joint's range) and the gripper's
0-100 spans the joint's range, as in `vla.envs`.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import shutil
import tempfile
import threading
import time
import tty
from pathlib import Path

import numpy as np

from vla.hardware.arms import ArmSpec, arm_spec
from vla.hardware.calibration import MotorCalibration, save_calibration
from vla.hardware.protocol import (
    ACTION,
    PING,
    READ,
    REG_WRITE,
    SYNC_READ,
    SYNC_WRITE,
    WRITE,
    Garbage,
    Incomplete,
    protocol_for,
)
from vla.hardware.tables import model
from vla.hardware.virtual.faults import DYNAMIXEL_BITS, FEETECH_BITS, Faults
from vla.hardware.virtual.servo import TICKS_PER_RAD, VirtualServo
from vla.hardware.virtual.twin import HandMotion, MotorTwin, MujocoTwin, TaskScene, Twin
from vla.shm import SharedArrays

# Encoder reading at joint angle 0, as if each servo horn were mounted a little off centre (so that calibration
# has something to do); every joint's range stays inside one turn.
MOUNT_TICKS = (2260, 1700, 2470, 1890, 2110, 1450)
KOCH_RANGES = np.array([[-2.6, 2.6], [-1.8, 1.8], [-1.6, 1.6], [-1.8, 1.8], [-2.6, 2.6], [-0.1, 1.6]])
HOME = (0.0, -0.35, 0.35, 1.2, 0.0, 0.35)  # radians: the sim's ready pose


class VirtualArm:
    def __init__(
        self,
        robot: str = "so101",
        role: str = "follower",
        baudrate: int = 1_000_000,
        faults: Faults | None = None,
        twin: str = "auto",
        calibration_dir: str | Path | None = None,
        seed: int = 0,
        scene: TaskScene | None = None,
        camera_fps: float = 30.0,
    ):
        """`scene`: a reset SO-101 sim task (`vla.envs.registry.task_scene`) the follower's twin stands in, and whose
        cameras it renders into shared memory at `camera_fps` (see `frames_layout`). `seed` moves a leader's hand."""
        self.spec: ArmSpec = arm_spec(robot, role)
        self.baudrate = baudrate
        self.byte_time = 10.0 / baudrate
        self.faults = faults or Faults()
        self.protocol = protocol_for(self.spec.vendor)
        self.scene, self.camera_fps = scene, camera_fps
        self.twin = self._make_twin(twin, seed)
        self.servos: dict[int, VirtualServo] = {}
        bits = FEETECH_BITS if self.spec.vendor == "feetech" else DYNAMIXEL_BITS
        for j, motor in enumerate(self.spec.motors.values()):
            servo = VirtualServo(motor.id, model(motor.model), self.twin, j, MOUNT_TICKS[j])
            if motor.id in self.faults.errors:
                servo.error_flags = bits.get(self.faults.errors[motor.id], 0x20)
            self.servos[motor.id] = servo
        self.calibration = self._factory_calibration()
        self._store_calibration()
        self._own_dir = calibration_dir is None
        directory = Path(tempfile.mkdtemp(prefix="vla-virtual-")) if calibration_dir is None else Path(calibration_dir)
        self.arm_id = f"virtual_{robot}_{role}"  # `--robot.id` with `--robot.calibration_dir=<directory>`
        self.calibration_path = directory / f"{self.arm_id}.json"
        save_calibration(self.calibration, self.calibration_path)
        self._master = self._slave = -1
        self.port = ""
        self.frames: SharedArrays | None = None
        self._camera_thread: threading.Thread | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self._registered: dict[int, tuple[int, bytes]] = {}
        self.requests = 0

    # -- set-up ---------------------------------------------------------------------------------------------
    def _make_twin(self, kind: str, seed: int) -> Twin:
        joints = tuple(self.spec.motors)
        if kind == "auto":
            kind = "mujoco" if self.spec.name == "so101" and self.spec.role == "follower" else "motor"
        if kind == "mujoco":
            if self.scene is not None:
                return MujocoTwin(joints, scene=self.scene)
            return MujocoTwin(joints, home=HOME)
        if self.scene is not None:
            raise ValueError("a task scene needs the MuJoCo twin (--twin mujoco)")
        ranges = KOCH_RANGES if self.spec.name == "koch" else self._so101_ranges()
        twin = MotorTwin(ranges, joints, home=HOME)
        if self.spec.role == "leader":
            twin.hand = HandMotion(ranges, seed=seed)
        return twin

    @staticmethod
    def _so101_ranges() -> np.ndarray:
        from vla.sim.assets import so101_xml
        from vla.sim.gl import mujoco

        m = mujoco.MjModel.from_xml_path(str(so101_xml()))
        return np.array([m.jnt_range[m.joint(j).id] for j in ("shoulder_pan", "shoulder_lift", "elbow_flex",
                                                                "wrist_flex", "wrist_roll", "gripper")])  # fmt: skip

    def _factory_calibration(self) -> dict[str, MotorCalibration]:
        """Offsets that read mid-range (2047) at joint angle 0; limits = the joint's range (symmetric for the
        body joints, so their degrees are the twin's radians in degrees)."""
        out = {}
        for j, (name, motor) in enumerate(self.spec.motors.items()):
            mid = 2047
            offset = MOUNT_TICKS[j] - mid if self.spec.vendor == "feetech" else mid - MOUNT_TICKS[j]
            lo, hi = self.twin.ranges[j]
            if name == "gripper":
                rmin, rmax = round(mid + lo * TICKS_PER_RAD), round(mid + hi * TICKS_PER_RAD)
            else:
                half = math.floor(min(-lo, hi) * TICKS_PER_RAD)
                rmin, rmax = mid - half, mid + half
            out[name] = MotorCalibration(id=motor.id, drive_mode=0, homing_offset=offset, range_min=rmin,
                                         range_max=rmax)  # fmt: skip
        return out

    def _store_calibration(self) -> None:
        for name, cal in self.calibration.items():
            servo = self.servos[self.spec.motors[name].id]
            servo._set("Homing_Offset", cal.homing_offset)
            servo._set("Min_Position_Limit", cal.range_min)
            servo._set("Max_Position_Limit", cal.range_max)
            servo._set("Goal_Position", servo.present_position())
            if getattr(self.twin, "powered", False):
                servo._set("Torque_Enable", 1)

    # -- running --------------------------------------------------------------------------------------------
    def start(self) -> VirtualArm:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline: bytes pass unchanged
        self.port = os.ttyname(self._slave)
        self.twin.start()
        self._running = True
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._serve, name="virtual-arm", daemon=True)
        self._thread.start()
        if isinstance(self.twin, MujocoTwin) and self.scene is not None and self.scene.config.cameras:
            h, w = self.scene.config.image_size
            self.frames = SharedArrays({name: ((h, w, 3), "uint8") for name in self.scene.config.cameras})
            self._camera_thread = threading.Thread(target=self._film, name="virtual-cameras", daemon=True)
            self._camera_thread.start()
        return self

    @property
    def frames_layout(self) -> dict | None:
        """What `SharedArrays.attach(layout, track=False)` needs to read the twin's camera images."""
        return self.frames.layout() if self.frames is not None else None

    def _film(self) -> None:
        assert isinstance(self.twin, MujocoTwin) and self.frames is not None
        period, count = 1.0 / self.camera_fps, 0
        next_frame = time.monotonic()
        try:
            while self._running:
                count += 1
                self.frames.write(count, self.twin.render())
                next_frame += period
                time.sleep(max(0.0, next_frame - time.monotonic()))
        finally:
            self.twin.close_renderer()

    def stop(self) -> None:
        self._running = False
        for thread in (self._thread, self._camera_thread):
            if thread is not None:
                thread.join(timeout=2)
        self.twin.stop()
        if self.frames is not None:
            self.frames.close()
            self.frames = None
        self._close_pty()
        if self._own_dir:
            shutil.rmtree(self.calibration_path.parent, ignore_errors=True)

    def __enter__(self) -> VirtualArm:
        return self.start() if not self._running else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1

    @property
    def serving(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def joint_positions(self) -> np.ndarray:
        """The twin's joints (radians)."""
        return np.array([self.twin.position(j) for j in range(len(self.spec.motors))])

    def _serve(self) -> None:
        poll = select.poll()
        poll.register(self._master, select.POLLIN)
        buf = bytearray()
        while self._running:
            if self.faults.vanish_s is not None and time.monotonic() - self._t0 >= self.faults.vanish_s:
                self._close_pty()
                return
            if not poll.poll(20):
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:
                continue
            arrived = time.monotonic()
            buf += data
            while buf:
                try:
                    packet, used = self.protocol.parse_instruction(buf)
                except Incomplete:
                    break
                except Garbage as err:
                    del buf[: err.skip]
                    continue
                del buf[:used]
                self.requests += 1
                self._answer(packet.id, packet.error, packet.params, arrived + used * self.byte_time)

    # -- instructions ---------------------------------------------------------------------------------------
    def _split(self, params: bytes, n_addr: int) -> tuple[int, bytes]:
        return int.from_bytes(params[:n_addr], "little"), params[n_addr:]

    def _answer(self, target: int, inst: int, params: bytes, ready: float) -> None:
        p = self.protocol
        wide = 2 if self.spec.vendor == "dynamixel" else 1  # bytes of an address or a length
        broadcast = target == p.broadcast_id
        replies: list[tuple[VirtualServo, int, bytes]] = []  # (servo, error, params)
        if inst == PING:
            servos = list(self.servos.values()) if broadcast else [self.servos.get(target)]
            for s in servos:
                if s is not None:
                    info = p.pack(s.model.model_number, 2) + bytes([s.model.firmware[0]]) if wide == 2 else b""
                    replies.append((s, 0, info))
        elif inst == READ and not broadcast and target in self.servos:
            address, rest = self._split(params, wide)
            size = int.from_bytes(rest[:wide], "little")
            s = self.servos[target]
            replies.append((s, 0, s.read(address, size)))
        elif inst in (WRITE, REG_WRITE):
            address, data = self._split(params, wide)
            for s in self.servos.values() if broadcast else [self.servos.get(target)]:
                if s is None:
                    continue
                if inst == WRITE:
                    error = s.write(address, data)
                else:
                    self._registered[s.id], error = (address, data), 0
                if not broadcast and s.answers_writes:
                    replies.append((s, error, b""))
        elif inst == ACTION:
            for servo_id in list(self._registered) if broadcast else [target]:
                if servo_id in self._registered and servo_id in self.servos:
                    self.servos[servo_id].write(*self._registered.pop(servo_id))
                    if not broadcast and self.servos[servo_id].answers_writes:
                        replies.append((self.servos[servo_id], 0, b""))
        elif inst == SYNC_READ and broadcast:
            address, rest = self._split(params, wide)
            size = int.from_bytes(rest[:wide], "little")
            for servo_id in rest[wide:]:
                if servo_id in self.servos:
                    s = self.servos[servo_id]
                    replies.append((s, 0, s.read(address, size)))
        elif inst == SYNC_WRITE and broadcast:
            address, rest = self._split(params, wide)
            size = int.from_bytes(rest[:wide], "little")
            block = rest[wide:]
            for i in range(0, len(block) - size, size + 1):
                if block[i] in self.servos:
                    self.servos[block[i]].write(address, block[i + 1 : i + 1 + size])
        self._send(replies, ready)

    def _send(self, replies: list[tuple[VirtualServo, int, bytes]], ready: float) -> None:
        elapsed = time.monotonic() - self._t0
        clock = ready
        for servo, error, params in replies:
            if self.faults.is_silent(servo.id, elapsed):
                continue
            if servo.error_flags:
                error |= servo.error_flags if self.spec.vendor == "feetech" else 0x80
            packet = self.protocol.status(servo.id, error, params)
            clock += servo.return_delay + len(packet) * self.byte_time
            packet, late = self.faults.mangle(packet)
            self._sleep_until(clock + late)
            try:
                os.write(self._master, packet)
            except OSError:
                return

    @staticmethod
    def _sleep_until(t: float) -> None:
        remaining = t - time.monotonic()
        if remaining > 0.0003:
            time.sleep(remaining - 0.0002)
        while time.monotonic() < t:
            pass
