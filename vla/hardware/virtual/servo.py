"""One emulated servo: its control table in memory and what the firmware does with reads and writes.

The memory starts at factory values (model number, firmware version, id 1.., baud rate register, return delay 250
= 500 us, position limits 0..4095, torque off). Reading refreshes the live registers (present position, velocity,
load, voltage, temperature, moving) from the twin joint it is mounted on; writing the goal position or the torque
switch drives that joint. Vendor semantics follow the manuals: Feetech present = actual - homing offset within one
turn and goals clamped to the position limits; Dynamixel present = actual + homing offset (direction reversed by
drive-mode bit 0), EEPROM writes refused with an access error while torque is on.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from vla.hardware.tables import ServoModel

if TYPE_CHECKING:
    from vla.hardware.virtual.twin import Twin

ACCESS_ERROR = 7  # Dynamixel result code
TICKS_PER_RAD = 4096 / (2 * math.pi)


class VirtualServo:
    def __init__(self, servo_id: int, model: ServoModel, twin: Twin, joint: int, mount_ticks: float,
                 direction: int = 1):  # fmt: skip
        """`mount_ticks`: encoder reading (actual position) when the twin joint is at 0 rad."""
        self.model, self.twin, self.joint = model, twin, joint
        self.mount_ticks, self.direction = mount_ticks, direction
        self.memory = bytearray(256)
        self.error_flags = 0  # injected status error bits (fault injection)
        self._set("Model_Number", model.model_number)
        if model.vendor == "feetech":
            self._set("Firmware_Major_Version", model.firmware[0])
            self._set("Firmware_Minor_Version", model.firmware[1])
            self._set("Response_Status_Level", 1)
            self._set("Max_Torque_Limit", 1000)
            self._set("Torque_Limit", 1000)
        else:
            self._set("Firmware_Version", model.firmware[0])
            self._set("Status_Return_Level", 2)
            self._set("Operating_Mode", 3)
        self._set("ID", servo_id)
        self._set("Return_Delay_Time", 250)
        self._set("Max_Position_Limit", 4095)
        self._set("Goal_Position", self.present_position())

    # -- memory ---------------------------------------------------------------------------------------------
    def _set(self, name: str, value: int) -> None:
        reg = self.model.register(name)
        self.memory[reg.address : reg.address + reg.size] = self._pack(reg.encode(value), reg.size)

    def _get(self, name: str) -> int:
        reg = self.model.register(name)
        return reg.decode(self._unpack(self.memory[reg.address : reg.address + reg.size]))

    def _pack(self, value: int, size: int) -> bytes:
        return int(value).to_bytes(size, "big" if self.model.big_endian else "little")

    def _unpack(self, data: bytes | bytearray) -> int:
        return int.from_bytes(data, "big" if self.model.big_endian else "little")

    @property
    def id(self) -> int:
        return self._get("ID")

    @property
    def return_delay(self) -> float:
        return self._get("Return_Delay_Time") * 2e-6

    @property
    def answers_writes(self) -> bool:
        if self.model.vendor == "feetech":
            return self._get("Response_Status_Level") >= 1
        return self._get("Status_Return_Level") >= 2

    @property
    def torque(self) -> bool:
        return bool(self._get("Torque_Enable"))

    # -- positions ------------------------------------------------------------------------------------------
    def _actual(self) -> float:
        """Encoder ticks of the twin joint, unwrapped."""
        return self.mount_ticks + self.direction * self.twin.position(self.joint) * TICKS_PER_RAD

    def _sign(self) -> int:
        if self.model.vendor == "dynamixel" and self._get("Drive_Mode") & 1:
            return -1
        return 1

    def present_position(self) -> int:
        offset = self._get("Homing_Offset")
        if self.model.vendor == "feetech":
            return round(self._actual() - offset) % self.model.resolution
        present = round(self._sign() * self._actual() + offset)
        return present % self.model.resolution if self._get("Operating_Mode") == 3 else present

    def _goal_to_joint(self, goal: int) -> float:
        """Goal register value -> twin joint angle (rad)."""
        offset = self._get("Homing_Offset")
        lo, hi = self._get("Min_Position_Limit"), self._get("Max_Position_Limit")
        if self.model.vendor == "feetech":
            if hi > lo:
                goal = min(hi, max(lo, goal))
            turn = math.floor((self._actual() - offset) / self.model.resolution)  # the window the joint is in
            actual = goal + offset + turn * self.model.resolution
        else:
            if self._get("Operating_Mode") == 3 and hi > lo:
                goal = min(hi, max(lo, goal))
            actual = self._sign() * (goal - offset)
        return (actual - self.mount_ticks) / (self.direction * TICKS_PER_RAD)

    # -- instructions ---------------------------------------------------------------------------------------
    def read(self, address: int, size: int) -> bytes:
        self._refresh()
        return bytes(self.memory[address : address + size])

    def write(self, address: int, data: bytes) -> int:
        """Apply a write; returns the status error byte (0: accepted)."""
        end = address + len(data)
        if self.model.vendor == "dynamixel" and address < self.model.eeprom_end and self.torque:
            return ACCESS_ERROR
        writable = [(a, b) for a, b in zip(range(address, end), data, strict=True) if not self._read_only(a)]
        for a, b in writable:
            self.memory[a] = b
        if self._touches("Torque_Enable", address, end):
            self.twin.set_torque(self.joint, self.torque)
            if self.torque:  # hold where it is unless a goal is written too
                self.twin.set_goal(self.joint, self._goal_to_joint(self._get("Goal_Position")))
        if self._touches("Goal_Position", address, end) and self.torque:
            self.twin.set_goal(self.joint, self._goal_to_joint(self._get("Goal_Position")))
        return 0

    def _read_only(self, address: int) -> bool:
        return any(r.read_only and r.address <= address < r.address + r.size for r in self.model.registers.values())

    def _touches(self, name: str, start: int, end: int) -> bool:
        reg = self.model.register(name)
        return start < reg.address + reg.size and reg.address < end

    def _refresh(self) -> None:
        velocity = self.twin.velocity(self.joint) * TICKS_PER_RAD * self.direction  # ticks/s
        effort = self.twin.effort(self.joint)  # fraction of the actuator's maximum, signed
        self._set("Present_Position", self.present_position())
        if self.model.vendor == "feetech":
            self._set("Present_Velocity", max(-32767, min(32767, round(velocity))))
            self._set("Present_Load", max(-1000, min(1000, round(effort * 1000))))
            self._set("Present_Voltage", 120)
            self._set("Present_Temperature", 32)
            self._set("Moving", int(abs(velocity) > 10))
            self._set("Status", self.error_flags)
        else:
            rpm = velocity * 60 / 4096
            self._set("Present_Velocity", round(self._sign() * rpm / 0.229))
            self._set("Present_Current", max(-1750, min(1750, round(self._sign() * effort * 1750))))
            self._set("Present_Input_Voltage", 50 if self.model.name.startswith("xl330") else 120)
            self._set("Present_Temperature", 32)
            self._set("Moving", int(abs(velocity) > 10))
            self._set("Hardware_Error_Status", self.error_flags)
