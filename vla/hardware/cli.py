"""`vla virtual-arm` and `vla calibrate`: thin wrappers over `vla.hardware` (no torch is imported)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vla.hardware.virtual import faults as faults_module
from vla.signals import sigterm_as_interrupt

COMMANDS = ("virtual-arm", "calibrate")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    va = sub.add_parser(
        "virtual-arm", help="a virtual SO-101 or Koch arm on a pseudo-terminal (servos answer byte-exactly)",
        description="Opens a pseudo-terminal that answers like the arm's servo bus; prints its path and a matching "
        "calibration file. Joint positions come from a MuJoCo twin (SO-101 follower) or a motor model.",
        epilog="faults (--fault, repeatable):\n" + (faults_module.__doc__ or "").split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    va.add_argument("--robot", choices=["so101", "koch"], default="so101")
    va.add_argument("--role", choices=["follower", "leader"], default="follower",
                    help="a leader is moved by a scripted hand while its torque is off")  # fmt: skip
    va.add_argument("--baud", type=int, default=1_000_000, help="emulated wire speed (replies are timed by it)")
    va.add_argument("--twin", choices=["auto", "mujoco", "motor"], default="auto")
    va.add_argument("--fault", action="append", default=[], metavar="SPEC", help="inject a fault (see below)")
    va.add_argument("--link", type=Path, help="also make a symlink with this path to the port")
    va.add_argument("--calibration-dir", type=Path, help="where to write the calibration file (default: a temp dir)")
    va.add_argument("--seed", type=int, default=0, help="seed of fault injection and of the leader's hand")

    cal = sub.add_parser("calibrate", help="calibrate a real arm (LeRobot's procedure and file format)")
    cal.add_argument("--robot", choices=["so101", "koch"], required=True)
    cal.add_argument("--role", choices=["follower", "leader"], required=True)
    cal.add_argument("--port", required=True)
    cal.add_argument("--id", required=True, help="the arm's name (the calibration file is <id>.json)")
    cal.add_argument("--calibration-dir", type=Path, help="default: LeRobot's calibration directory")


def run(args: argparse.Namespace) -> None:
    if args.command == "virtual-arm":
        virtual_arm(args)
    elif args.command == "calibrate":
        calibrate(args)


def virtual_arm(args: argparse.Namespace) -> None:
    from vla.hardware.virtual.arm import VirtualArm
    from vla.hardware.virtual.faults import Faults

    try:
        faults = Faults.parse(args.fault, seed=args.seed)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    arm = VirtualArm(args.robot, args.role, baudrate=args.baud, faults=faults, twin=args.twin,
                     calibration_dir=args.calibration_dir, seed=args.seed).start()  # fmt: skip
    port = arm.port
    if args.link:
        args.link.unlink(missing_ok=True)
        args.link.symlink_to(arm.port)
        port = str(args.link)
    kind = "robot" if args.role == "follower" else "teleop"
    print(f"virtual {args.robot} {args.role} on {port} ({args.baud} baud, {type(arm.twin).__name__})", flush=True)
    print(f"calibration: {arm.calibration_path}")
    print(f"  lerobot: --{kind}.type=vla_{args.robot}_{args.role} --{kind}.port={port} "
          f"--{kind}.id={arm.arm_id} --{kind}.calibration_dir={arm.calibration_path.parent}")  # fmt: skip
    print(f"  python:  {'SO101' if args.robot == 'so101' else 'Koch'}{args.role.title()}('{port}', "
          f"calibration_path='{arm.calibration_path}')")  # fmt: skip
    print("Ctrl-C to stop", flush=True)
    try:
        with sigterm_as_interrupt():
            while arm.serving:
                time.sleep(0.2)
        print("the port vanished (fault injection); stopping")
    except KeyboardInterrupt:
        pass
    finally:
        arm.stop()
        if args.link:
            args.link.unlink(missing_ok=True)


def calibrate(args: argparse.Namespace) -> None:
    from vla.hardware.arms import arm_spec
    from vla.hardware.robots import Arm

    spec = arm_spec(args.robot, args.role)
    path = spec.calibration_path(args.id, args.calibration_dir)
    arm = Arm(spec, args.port, args.id, calibration_path=path)
    arm.bus.connect()
    try:
        arm.calibrate()
    finally:
        arm.disconnect()
