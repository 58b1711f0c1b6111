"""`MotorBus`: named motors on one servo bus, registers by name, positions in LeRobot's units.

    bus = MotorBus("/dev/ttyACM0", {"shoulder_pan": Motor(1, "sts3215"), ...}, calibration=load_calibration(f))
    bus.connect()                       # opens the port, checks every motor answers with the right model
    bus.sync_read("Present_Position")   # {"shoulder_pan": 3.5, ...} degrees / 0-100
    bus.sync_write("Goal_Position", {"shoulder_pan": 10.0})

Vendor differences are confined to `VENDOR`: Feetech's torque switch also sets `Lock` (EEPROM writes need it
clear), Feetech's homing offset subtracts (present = actual - offset) while Dynamixel's adds, and a calibration's
`drive_mode` reverses direction in software for Feetech (range modes only, as LeRobot does) but in the servo's
Drive_Mode register for Dynamixel.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vla.hardware.bus import ServoBus
from vla.hardware.calibration import MotorCalibration, NormMode, to_ticks, to_units
from vla.hardware.errors import BusError
from vla.hardware.port import Port
from vla.hardware.protocol import protocol_for
from vla.hardware.tables import ServoModel, model

POSITION_REGISTERS = {"Present_Position", "Goal_Position", "Min_Position_Limit", "Max_Position_Limit"}


@dataclass(frozen=True)
class VendorRules:
    homing_sign: int  # present = actual - homing_sign * offset
    lock_register: bool
    apply_drive_mode: bool


VENDOR = {
    "feetech": VendorRules(homing_sign=1, lock_register=True, apply_drive_mode=True),
    "dynamixel": VendorRules(homing_sign=-1, lock_register=False, apply_drive_mode=False),
}


@dataclass(frozen=True)
class Motor:
    id: int
    model: str
    mode: NormMode = NormMode.DEGREES


class MotorBus:
    def __init__(
        self,
        port: str | Port,
        motors: dict[str, Motor],
        calibration: dict[str, MotorCalibration] | None = None,
        baudrate: int = 1_000_000,
        timeout: float = 0.02,
        retries: int = 2,
    ):
        self.motors = dict(motors)
        self.models: dict[str, ServoModel] = {name: model(m.model) for name, m in motors.items()}
        vendors = {m.vendor for m in self.models.values()}
        if len(vendors) != 1:
            raise ValueError(f"one bus cannot mix servo vendors {sorted(vendors)}")
        self.vendor = vendors.pop()
        self.rules = VENDOR[self.vendor]
        ids = [m.id for m in motors.values()]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate servo ids in {motors}")
        self.calibration = dict(calibration or {})
        self._port_arg, self._bus_kwargs = port, {"baudrate": baudrate, "timeout": timeout, "retries": retries}
        self.bus: ServoBus | None = None

    # -- connection -----------------------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self.bus is not None

    def connect(self, check: bool = True) -> None:
        if self.bus is not None:
            raise BusError(f"{self.port_name} is already connected")
        self.bus = ServoBus(self._port_arg, protocol_for(self.vendor), **self._bus_kwargs)  # type: ignore[arg-type]
        if check:
            try:
                self.check_motors()
            except BaseException:
                self.disconnect()
                raise

    def disconnect(self) -> None:
        if self.bus is not None:
            self.bus.close()
            self.bus = None

    @property
    def port_name(self) -> str:
        return self._port_arg if isinstance(self._port_arg, str) else self._port_arg.path

    @property
    def raw(self) -> ServoBus:
        if self.bus is None:
            raise BusError(f"motor bus on {self.port_name} is not connected; call connect() first")
        return self.bus

    def check_motors(self) -> None:
        """Every motor answers and has the configured model; one error lists every problem."""
        problems = []
        for name, motor in self.motors.items():
            try:
                number = self.raw.read(motor.id, *self._addr(name, "Model_Number"))
            except BusError as err:
                problems.append(f"'{name}' (id {motor.id}) does not answer ({type(err).__name__})")
                continue
            if number != self.models[name].model_number:
                problems.append(f"'{name}' (id {motor.id}) is model number {number}, expected "
                                f"{self.models[name].model_number} ({motor.model})")  # fmt: skip
        if problems:
            raise BusError(f"motor check failed on {self.port_name}: " + "; ".join(problems))

    # -- registers by name ----------------------------------------------------------------------------------
    def _addr(self, motor: str, register: str) -> tuple[int, int]:
        reg = self.models[motor].register(register)
        return reg.address, reg.size

    def read(self, register: str, motor: str) -> int:
        reg = self.models[motor].register(register)
        return reg.decode(self.raw.read(self.motors[motor].id, reg.address, reg.size))

    def write(self, register: str, motor: str, value: int) -> None:
        reg = self.models[motor].register(register)
        if reg.read_only:
            raise ValueError(f"register '{register}' of {self.models[motor].name} is read-only")
        self.raw.write(self.motors[motor].id, reg.address, reg.encode(value), reg.size)

    def _names(self, motors: Iterable[str] | None) -> list[str]:
        names = list(self.motors) if motors is None else list(motors)
        unknown = [m for m in names if m not in self.motors]
        if unknown:
            raise KeyError(f"unknown motor(s) {unknown}; this bus has {list(self.motors)}")
        return names

    def _shared_register(self, register: str, names: list[str]):
        regs = {self.models[m].register(register) for m in names}
        if len(regs) != 1:
            raise ValueError(f"'{register}' is not at the same address on all of {names}; read them one by one")
        return regs.pop()

    def sync_read(self, register: str, motors: Iterable[str] | None = None, normalize: bool = True
                  ) -> dict[str, float]:  # fmt: skip
        names = self._names(motors)
        reg = self._shared_register(register, names)
        raw = self.raw.sync_read([self.motors[m].id for m in names], reg.address, reg.size)
        values = {m: reg.decode(raw[self.motors[m].id]) for m in names}
        if normalize and register in POSITION_REGISTERS:
            return {m: self.to_units(m, v) for m, v in values.items()}
        return {m: float(v) for m, v in values.items()}

    def sync_write(self, register: str, values: dict[str, float], normalize: bool = True) -> None:
        names = self._names(values)
        reg = self._shared_register(register, names)
        if reg.read_only:
            raise ValueError(f"register '{register}' is read-only")
        ticks = {m: self.to_ticks(m, v) if normalize and register in POSITION_REGISTERS else int(v)
                 for m, v in values.items()}  # fmt: skip
        self.raw.sync_write(reg.address, reg.size, {self.motors[m].id: reg.encode(t) for m, t in ticks.items()})

    # -- units ----------------------------------------------------------------------------------------------
    def _calibration(self, motor: str) -> MotorCalibration:
        try:
            return self.calibration[motor]
        except KeyError:
            raise BusError(f"no calibration for motor '{motor}' on {self.port_name}; load or run a calibration "
                           "before reading positions in degrees") from None  # fmt: skip

    def to_units(self, motor: str, ticks: int) -> float:
        m = self.motors[motor]
        return to_units(ticks, self._calibration(motor), m.mode, self.models[motor].resolution,
                        self.rules.apply_drive_mode)  # fmt: skip

    def to_ticks(self, motor: str, value: float) -> int:
        m = self.motors[motor]
        return to_ticks(value, self._calibration(motor), m.mode, self.models[motor].resolution,
                        self.rules.apply_drive_mode)  # fmt: skip

    # -- torque and calibration -----------------------------------------------------------------------------
    def set_torque(self, enabled: bool, motors: Iterable[str] | None = None) -> None:
        for name in self._names(motors):
            self.write("Torque_Enable", name, int(enabled))
            if self.rules.lock_register:
                self.write("Lock", name, int(enabled))

    def read_calibration(self) -> dict[str, MotorCalibration]:
        """What the servos hold now (drive mode from the calibration in memory where there is one)."""
        out = {}
        for name, motor in self.motors.items():
            drive = self.calibration[name].drive_mode if name in self.calibration else 0
            if self.vendor == "dynamixel":
                drive = self.read("Drive_Mode", name) & 1
            out[name] = MotorCalibration(
                id=motor.id, drive_mode=drive, homing_offset=self.read("Homing_Offset", name),
                range_min=self.read("Min_Position_Limit", name), range_max=self.read("Max_Position_Limit", name),
            )  # fmt: skip
        return out

    def write_calibration(self, calibration: dict[str, MotorCalibration]) -> None:
        """Store homing offsets and limits in the servos (torque must be off: EEPROM)."""
        for name, cal in calibration.items():
            if self.vendor == "dynamixel":
                self.write("Drive_Mode", name, cal.drive_mode)
            self.write("Homing_Offset", name, cal.homing_offset)
            self.write("Min_Position_Limit", name, cal.range_min)
            self.write("Max_Position_Limit", name, cal.range_max)
        self.calibration = {**self.calibration, **calibration}

    def half_turn_homings(self) -> dict[str, int]:
        """Homing offsets that make the current pose read mid-range (resolution / 2 - 1): LeRobot's homing step."""
        offsets = {}
        for name in self.motors:
            self.write("Homing_Offset", name, 0)
            actual = self.read("Present_Position", name)
            mid = self.models[name].resolution // 2 - 1
            offsets[name] = self.rules.homing_sign * (actual - mid)
            self.write("Homing_Offset", name, offsets[name])
        return offsets
