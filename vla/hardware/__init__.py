"""Servo-bus drivers (Feetech SCS/STS, Dynamixel 2.0) on pyserial, arms, safety limits and a virtual arm.

Nothing here imports torch: the computer that drives the servos needs only numpy and pyserial (and MuJoCo for the
virtual arm's twin). `vla.hardware.lerobot` adapts the arms to LeRobot's `Robot` / `Teleoperator` interfaces and
is imported only when LeRobot itself is running (`--robot.discover_packages_path=vla.hardware`).
"""
