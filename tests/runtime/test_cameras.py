"""Cameras for `vla deploy` on a real robot: specs, the reader process, its failures, and the whole command."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vla.runtime.cameras import CameraError, CameraFrames, CameraSpec


def test_camera_specs_parse_and_bad_ones_say_the_format() -> None:
    assert CameraSpec.parse("front=0") == CameraSpec("front", "0", 640, 480, 30)
    assert CameraSpec.parse("wrist=/dev/video2:320x240@15") == CameraSpec("wrist", "/dev/video2", 320, 240, 15)
    assert CameraSpec.parse("top=test-pattern@60").fps == 60
    for bad in ("front", "=0", "front=0:640", "front=0@x", "front=0:640x480:1"):
        with pytest.raises(ValueError, match="NAME=SOURCE"):
            CameraSpec.parse(bad)


def test_frames_arrive_in_shared_memory_and_keep_coming() -> None:
    specs = [CameraSpec("front", "test-pattern", 64, 48, 50), CameraSpec("wrist", "test-pattern", 32, 32, 50)]
    frames = CameraFrames(specs)
    try:
        first = frames.latest()
        assert first["front"].shape == (48, 64, 3) and first["wrist"].shape == (32, 32, 3)
        assert first["front"].dtype == np.uint8
        count = frames.frame_count
        time.sleep(0.3)
        assert frames.frame_count >= count + 5  # about 50 per second
        assert not np.array_equal(frames.latest()["front"], first["front"])  # new images, not the first one again
    finally:
        frames.close()


def test_a_camera_that_cannot_open_fails_at_start_with_the_reason() -> None:
    with pytest.raises(CameraError, match="did not start"):
        CameraFrames([CameraSpec("front", "/nonexistent/video9", 64, 48, 30)], start_timeout=30)


def test_a_dead_reader_is_an_error_not_a_frozen_image() -> None:
    frames = CameraFrames([CameraSpec("front", "test-pattern", 32, 32, 30)])
    try:
        frames._process.kill()
        frames._process.join(5)
        with pytest.raises(CameraError, match="camera reader stopped"):
            frames.latest()
    finally:
        frames.close()


@pytest.mark.slow
def test_deploy_on_a_robot_port_with_cameras(virtual_arm) -> None:  # type: ignore[no-untyped-def]
    """`vla deploy --robot so101 --port ... --camera ...`: the real-robot path (serial port, calibration file,
    cameras through the reader process) against the virtual arm's pseudo-terminal."""
    arm = virtual_arm("so101")
    vla = str(Path(sys.executable).with_name("vla"))
    cmd = [vla, "deploy", "--robot", "so101", "--port", arm.port, "--calibration", str(arm.calibration_path),
           "--camera", "front=test-pattern:96x96", "--camera", "wrist=test-pattern:96x96", "--policy", "scripted",
           "--start", "policy", "--duration", "3", "--no-realtime"]  # fmt: skip
    proc = subprocess.run(cmd, input="", capture_output=True, text=True, timeout=120)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "opening cameras front, wrist" in text and "stopped (duration) after 90 ticks" in text

    wrist = cmd.index("wrist=test-pattern:96x96")
    missing = cmd[: wrist - 1] + cmd[wrist + 1 :]  # the policy also needs 'wrist'
    proc = subprocess.run(missing, input="", capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "missing ['wrist']" in proc.stdout + proc.stderr
