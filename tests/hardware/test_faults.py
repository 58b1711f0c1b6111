"""Each fault the virtual arm injects ends in the documented behaviour: a correct value after bounded retries, or a
clear typed error. Never a wrong position.

The twin is the motor model with torque off, so joints stand still and every correct read is known exactly.
"""

from __future__ import annotations

import time

import pytest

from vla.hardware.bus import ServoBus
from vla.hardware.errors import CommError, CorruptPacketError, PortGoneError, ServoStatusError, ServoTimeoutError
from vla.hardware.protocol import DynamixelProtocol, FeetechProtocol
from vla.hardware.virtual.faults import Faults

IDS = [1, 2, 3, 4, 5, 6]


def still_arm(virtual_arm, robot: str = "so101", **faults):
    arm = virtual_arm(robot, twin="motor", faults=Faults(seed=1, **faults))
    protocol = FeetechProtocol() if robot == "so101" else DynamixelProtocol()
    address, size = (56, 2) if robot == "so101" else (132, 4)
    truth = {i: arm.servos[i].present_position() for i in IDS}
    bus = ServoBus(arm.port, protocol, timeout=0.01, retries=3, settle=0.002)
    return arm, bus, address, size, truth


@pytest.mark.parametrize("robot", ["so101", "koch"])
@pytest.mark.parametrize("fault", ["drop", "corrupt", "late"])
def test_lossy_line_gives_correct_values_or_typed_errors(virtual_arm, robot: str, fault: str) -> None:
    kwargs = {"late": 0.3, "late_s": 0.02} if fault == "late" else {fault: 0.3}
    _arm, bus, address, size, truth = still_arm(virtual_arm, robot, **kwargs)
    good = failed = 0
    for _ in range(40):
        try:
            values = bus.sync_read(IDS, address, size)
        except (ServoTimeoutError, CorruptPacketError) as err:
            assert err.ids and set(err.ids) <= set(IDS)
            failed += 1
            continue
        assert values == truth  # a late reply to a failed attempt is never taken for a later answer
        good += 1
    assert bus.stats.retries > 0 and good >= 30, (good, failed, bus.stats)


def test_every_reply_short_raises_after_bounded_retries(virtual_arm) -> None:
    _arm, bus, address, size, _ = still_arm(virtual_arm, drop=1.0)  # a byte missing from every reply
    start = time.monotonic()
    with pytest.raises(CommError, match=r"id\(s\) \[1, 2, 3, 4, 5, 6\]"):
        bus.sync_read(IDS, address, size)
    assert bus.stats.retries == 3 and time.monotonic() - start < 1.0


def test_every_reply_corrupt_raises_after_bounded_retries(virtual_arm) -> None:
    _arm, bus, address, size, _ = still_arm(virtual_arm, corrupt=1.0)  # a bit flipped in every reply
    with pytest.raises(CommError, match=r"id\(s\) \[3\]"):
        bus.read(3, address, size)
    # each attempt failed: mostly as unreadable, or as incomplete where the flip hit the length byte
    assert bus.stats.corrupt >= 2 and bus.stats.corrupt + bus.stats.timeouts == 4


def test_servo_error_flags_are_raised_with_the_values(virtual_arm) -> None:
    _arm, bus, address, size, truth = still_arm(virtual_arm, errors={3: "overload"})
    with pytest.raises(ServoStatusError, match="id 3: overload") as err:
        bus.sync_read(IDS, address, size)
    assert err.value.flags == {3: ("overload",)} and err.value.values == truth
    assert bus.sync_read(IDS, address, size, check_status=False) == truth
    assert bus.stats.status_errors == 2


def test_dynamixel_hardware_alert_is_raised(virtual_arm) -> None:
    _arm, bus, address, size, _ = still_arm(virtual_arm, "koch", errors={2: "overheat"})
    with pytest.raises(ServoStatusError, match="hardware alert"):
        bus.read(2, address, size)


def test_a_servo_that_stops_answering_is_named(virtual_arm) -> None:
    _arm, bus, address, size, truth = still_arm(virtual_arm, silent={4: 0.3})
    assert bus.sync_read(IDS, address, size) == truth
    time.sleep(0.35)
    with pytest.raises(ServoTimeoutError) as err:
        bus.sync_read(IDS, address, size)
    assert err.value.ids == (4,)
    assert bus.sync_read([1, 2, 3, 5, 6], address, size) == {i: truth[i] for i in (1, 2, 3, 5, 6)}


def test_the_port_vanishing_raises_port_gone_at_once(virtual_arm) -> None:
    _arm, bus, address, size, truth = still_arm(virtual_arm, vanish_s=0.3)
    assert bus.sync_read(IDS, address, size) == truth
    time.sleep(0.4)
    start = time.monotonic()
    with pytest.raises(PortGoneError, match="stopped working"):
        for _ in range(3):
            bus.sync_read(IDS, address, size)
    assert time.monotonic() - start < 0.2  # not retried like a slow servo
    assert bus.stats.retries == 0


def test_fault_specs_parse_and_reject_nonsense() -> None:
    f = Faults.parse(["drop=0.1", "late=0.2:0.03", "error=3:overheat", "silent=4@1.5", "vanish@2"])
    assert (f.drop, f.late, f.late_s, f.errors, f.silent, f.vanish_s) == (0.1, 0.2, 0.03, {3: "overheat"},
                                                                          {4: 1.5}, 2.0)  # fmt: skip
    with pytest.raises(ValueError, match="bad fault 'explode=1'"):
        Faults.parse(["explode=1"])


def test_one_bus_is_safe_from_several_threads(virtual_arm) -> None:
    import threading

    _arm, bus, address, size, truth = still_arm(virtual_arm)
    results: list[dict[int, int]] = []
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            for k in range(40):
                results.append(bus.sync_read(IDS, address, size))
                bus.sync_write(42, 2, {i: truth[i] for i in IDS}) if k % 2 else bus.read(2, address, size)
        except BaseException as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 160 and all(r == truth for r in results)
    assert bus.stats.retries == 0
