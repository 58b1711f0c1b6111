"""Control tables of the servos we drive: register addresses, sizes, sign encodings, model numbers.

Facts from the vendors' manuals (Feetech STS/SMS series memory table; ROBOTIS X-series e-Manual), with the register
names LeRobot uses so that calibration files and user code read the same. Notable:
- Feetech STS registers are little-endian; signed ones use sign-magnitude with the sign in a register-specific
  bit (Homing_Offset: bit 11, positions and velocities: bit 15, Present_Load: bit 10). The older SCS series is
  big-endian.
- Dynamixel X-series registers are little-endian two's complement.
- EEPROM registers (below `eeprom_end`) can only be written with torque off on both vendors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Sign(Enum):
    UNSIGNED = "unsigned"
    TWOS = "twos"  # two's complement over the register's size
    MAGNITUDE = "magnitude"  # sign-magnitude, sign bit given by `Register.sign_bit`


@dataclass(frozen=True)
class Register:
    address: int
    size: int  # bytes
    sign: Sign = Sign.UNSIGNED
    sign_bit: int = 15
    read_only: bool = False

    def encode(self, value: int) -> int:
        """A signed Python int -> the unsigned integer stored in the register."""
        value = int(value)
        limit = 1 << (8 * self.size)
        if self.sign is Sign.UNSIGNED:
            if not 0 <= value < limit:
                raise ValueError(f"{value} does not fit an unsigned {self.size}-byte register")
            return value
        if self.sign is Sign.TWOS:
            if not -(limit >> 1) <= value < (limit >> 1):
                raise ValueError(f"{value} does not fit a signed {self.size}-byte register")
            return value % limit
        magnitude = abs(value)
        if magnitude >= 1 << self.sign_bit:
            raise ValueError(f"|{value}| does not fit below sign bit {self.sign_bit}")
        return magnitude | ((1 << self.sign_bit) if value < 0 else 0)

    def decode(self, raw: int) -> int:
        """The unsigned integer read from the register -> a signed Python int."""
        if self.sign is Sign.UNSIGNED:
            return raw
        if self.sign is Sign.TWOS:
            half = 1 << (8 * self.size - 1)
            return raw - (half << 1) if raw >= half else raw
        magnitude = raw & ((1 << self.sign_bit) - 1)
        return -magnitude if raw & (1 << self.sign_bit) else magnitude


@dataclass(frozen=True)
class ServoModel:
    name: str
    vendor: str  # "feetech" | "dynamixel"
    model_number: int
    resolution: int  # encoder ticks per turn
    registers: dict[str, Register] = field(repr=False)
    eeprom_end: int  # addresses below this are EEPROM (writable with torque off only)
    baudrates: dict[int, int] = field(repr=False)  # baud rate -> value of the Baud_Rate register
    firmware: tuple[int, ...] = (3, 10)
    big_endian: bool = False

    def register(self, name: str) -> Register:
        try:
            return self.registers[name]
        except KeyError:
            raise KeyError(f"{self.name} has no register '{name}'") from None


M = Sign.MAGNITUDE
STS_REGISTERS: dict[str, Register] = {
    "Firmware_Major_Version": Register(0, 1, read_only=True),
    "Firmware_Minor_Version": Register(1, 1, read_only=True),
    "Model_Number": Register(3, 2, read_only=True),
    "ID": Register(5, 1),
    "Baud_Rate": Register(6, 1),
    "Return_Delay_Time": Register(7, 1),  # units of 2 us
    "Response_Status_Level": Register(8, 1),  # 0: answer reads and pings only, 1: answer everything
    "Min_Position_Limit": Register(9, 2),
    "Max_Position_Limit": Register(11, 2),
    "Max_Temperature_Limit": Register(13, 1),
    "Max_Voltage_Limit": Register(14, 1),
    "Min_Voltage_Limit": Register(15, 1),
    "Max_Torque_Limit": Register(16, 2),
    "Phase": Register(18, 1),
    "Unloading_Condition": Register(19, 1),
    "LED_Alarm_Condition": Register(20, 1),
    "P_Coefficient": Register(21, 1),
    "D_Coefficient": Register(22, 1),
    "I_Coefficient": Register(23, 1),
    "Minimum_Startup_Force": Register(24, 2),
    "CW_Dead_Zone": Register(26, 1),
    "CCW_Dead_Zone": Register(27, 1),
    "Protection_Current": Register(28, 2),
    "Angular_Resolution": Register(30, 1),
    "Homing_Offset": Register(31, 2, M, sign_bit=11),
    "Operating_Mode": Register(33, 1),
    "Protective_Torque": Register(34, 1),
    "Protection_Time": Register(35, 1),
    "Overload_Torque": Register(36, 1),
    "Torque_Enable": Register(40, 1),
    "Acceleration": Register(41, 1),
    "Goal_Position": Register(42, 2, M, sign_bit=15),
    "Goal_Time": Register(44, 2),
    "Goal_Velocity": Register(46, 2, M, sign_bit=15),
    "Torque_Limit": Register(48, 2),
    "Lock": Register(55, 1),
    "Present_Position": Register(56, 2, M, sign_bit=15, read_only=True),
    "Present_Velocity": Register(58, 2, M, sign_bit=15, read_only=True),
    "Present_Load": Register(60, 2, M, sign_bit=10, read_only=True),
    "Present_Voltage": Register(62, 1, read_only=True),  # 0.1 V
    "Present_Temperature": Register(63, 1, read_only=True),  # degrees C
    "Status": Register(65, 1, read_only=True),
    "Moving": Register(66, 1, read_only=True),
    "Present_Current": Register(69, 2, read_only=True),
    "Maximum_Acceleration": Register(85, 1),
}

T = Sign.TWOS
X_REGISTERS: dict[str, Register] = {
    "Model_Number": Register(0, 2, read_only=True),
    "Model_Information": Register(2, 4, read_only=True),
    "Firmware_Version": Register(6, 1, read_only=True),
    "ID": Register(7, 1),
    "Baud_Rate": Register(8, 1),
    "Return_Delay_Time": Register(9, 1),  # units of 2 us
    "Drive_Mode": Register(10, 1),  # bit 0: reverse direction
    "Operating_Mode": Register(11, 1),  # 3 position, 4 extended position, 5 current-based position
    "Secondary_ID": Register(12, 1),
    "Protocol_Type": Register(13, 1),
    "Homing_Offset": Register(20, 4, T),
    "Moving_Threshold": Register(24, 4),
    "Temperature_Limit": Register(31, 1),
    "Max_Voltage_Limit": Register(32, 2),
    "Min_Voltage_Limit": Register(34, 2),
    "PWM_Limit": Register(36, 2),
    "Current_Limit": Register(38, 2),
    "Acceleration_Limit": Register(40, 4),
    "Velocity_Limit": Register(44, 4),
    "Max_Position_Limit": Register(48, 4),
    "Min_Position_Limit": Register(52, 4),
    "Shutdown": Register(63, 1),
    "Torque_Enable": Register(64, 1),
    "LED": Register(65, 1),
    "Status_Return_Level": Register(68, 1),  # 0 ping only, 1 ping and reads, 2 everything
    "Registered_Instruction": Register(69, 1, read_only=True),
    "Hardware_Error_Status": Register(70, 1, read_only=True),
    "Velocity_I_Gain": Register(76, 2),
    "Velocity_P_Gain": Register(78, 2),
    "Position_D_Gain": Register(80, 2),
    "Position_I_Gain": Register(82, 2),
    "Position_P_Gain": Register(84, 2),
    "Bus_Watchdog": Register(98, 1),
    "Goal_PWM": Register(100, 2, T),
    "Goal_Current": Register(102, 2, T),
    "Goal_Velocity": Register(104, 4, T),
    "Profile_Acceleration": Register(108, 4),
    "Profile_Velocity": Register(112, 4),
    "Goal_Position": Register(116, 4, T),
    "Realtime_Tick": Register(120, 2, read_only=True),
    "Moving": Register(122, 1, read_only=True),
    "Moving_Status": Register(123, 1, read_only=True),
    "Present_PWM": Register(124, 2, T, read_only=True),
    "Present_Current": Register(126, 2, T, read_only=True),
    "Present_Velocity": Register(128, 4, T, read_only=True),
    "Present_Position": Register(132, 4, T, read_only=True),
    "Present_Input_Voltage": Register(144, 2, read_only=True),
    "Present_Temperature": Register(146, 1, read_only=True),
}

STS_BAUDRATES = {1_000_000: 0, 500_000: 1, 250_000: 2, 128_000: 3, 115_200: 4, 57_600: 5, 38_400: 6, 19_200: 7}
X_BAUDRATES = {9_600: 0, 57_600: 1, 115_200: 2, 1_000_000: 3, 2_000_000: 4, 3_000_000: 5, 4_000_000: 6}


def _sts(name: str, number: int) -> ServoModel:
    return ServoModel(name, "feetech", number, 4096, STS_REGISTERS, eeprom_end=40, baudrates=STS_BAUDRATES)


def _x(name: str, number: int) -> ServoModel:
    return ServoModel(name, "dynamixel", number, 4096, X_REGISTERS, eeprom_end=64, baudrates=X_BAUDRATES,
                      firmware=(52,))  # fmt: skip


MODELS: dict[str, ServoModel] = {
    m.name: m
    for m in (
        _sts("sts3215", 777),
        _sts("sts3250", 2825),
        _x("xl330-m077", 1190),
        _x("xl330-m288", 1200),
        _x("xl430-w250", 1060),
        _x("xm430-w350", 1020),
    )
}


def model(name: str) -> ServoModel:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown servo model '{name}'; known: {', '.join(MODELS)}") from None
