"""Real cameras for `vla deploy`: LeRobot's camera classes in their own process, frames in shared memory.

    vla deploy ... --camera front=0 --camera wrist=/dev/video2:640x480@30

Each `--camera NAME=SOURCE[:WxH][@FPS]` names a policy camera (the NAME in `observation.images.NAME`) and where it
comes from: an OpenCV index or device path (LeRobot's `OpenCVCamera`), or `test-pattern` (a moving gradient, for
dry runs without a camera). A reader process opens them all, and writes every new set of frames into one
`SharedArrays` block that the control loop reads without waiting (the loop never blocks on a camera). The frames
are RGB uint8 (H, W, 3), the resolution asked for (640x480 unless given).

If the reader process dies (a camera unplugged, a driver error) the next read raises `CameraError` with the reason,
and `vla deploy` stops the way it stops on any error: the follower's exit policy applies.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from vla.hardware.pattern import pattern_frame
from vla.shm import SharedArrays

SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)=(?P<source>[^:@]+)(?::(?P<w>\d+)x(?P<h>\d+))?(?:@(?P<fps>\d+))?$")
TEST_PATTERN = "test-pattern"


class CameraError(RuntimeError):
    pass


@dataclass(frozen=True)
class CameraSpec:
    name: str
    source: str  # an OpenCV index ("0"), a device or file path, or "test-pattern"
    width: int = 640
    height: int = 480
    fps: int = 30

    @classmethod
    def parse(cls, text: str) -> CameraSpec:
        match = SPEC.match(text.strip())
        if match is None:
            raise ValueError(f"camera '{text}' is not NAME=SOURCE[:WxH][@FPS], e.g. front=0 or "
                             "wrist=/dev/video2:640x480@30")  # fmt: skip
        g = match.groupdict()
        return cls(g["name"], g["source"], int(g["w"] or 640), int(g["h"] or 480), int(g["fps"] or 30))


class PatternCamera:
    """A camera without hardware: a gradient that moves one pixel per frame, at the asked rate."""

    def __init__(self, spec: CameraSpec):
        self.spec, self._frame, self._next = spec, 0, 0.0

    def connect(self) -> None:
        self._next = time.monotonic()

    def async_read(self, timeout_ms: float = 200) -> np.ndarray:
        self._next += 1.0 / self.spec.fps
        time.sleep(max(0.0, self._next - time.monotonic()))
        self._frame += 1
        return pattern_frame(self.spec.height, self.spec.width, self._frame)

    def disconnect(self) -> None:
        pass


def open_camera(spec: CameraSpec) -> Any:
    if spec.source == TEST_PATTERN:
        return PatternCamera(spec)
    from pathlib import Path

    from lerobot.cameras.opencv import OpenCVCamera, OpenCVCameraConfig

    source: int | Path = int(spec.source) if spec.source.isdigit() else Path(spec.source)
    return OpenCVCamera(OpenCVCameraConfig(index_or_path=source, fps=spec.fps, width=spec.width, height=spec.height))


def _reader(specs: list[CameraSpec], layout: dict, errors: Any, ready: Any, stop: Any) -> None:
    """The reader process: open every camera, then write each new set of frames until told to stop."""
    frames = SharedArrays.attach(layout)
    cameras: dict[str, Any] = {}
    try:
        for spec in specs:
            camera = open_camera(spec)
            camera.connect()
            cameras[spec.name] = camera
        count = 0
        while not stop.is_set():
            shot = {}
            for spec in specs:
                image = np.asarray(cameras[spec.name].async_read(timeout_ms=1000))
                if image.shape != (spec.height, spec.width, 3):
                    raise CameraError(f"camera {spec.name} gave a {image.shape} frame; asked for "
                                      f"{spec.height}x{spec.width} RGB")  # fmt: skip
                shot[spec.name] = image
            frames.write(count, shot)
            count += 1
            ready.set()
    except BaseException as err:  # reported to the parent, which stops the robot
        if not stop.is_set():
            errors.put(f"{type(err).__name__}: {err}")
    finally:
        for camera in cameras.values():
            with contextlib.suppress(Exception):
                camera.disconnect()
        frames.close()


class CameraFrames:
    """Cameras read in a child process; `latest()` gives the newest frames without waiting (a frame source for
    `FollowerIO`)."""

    def __init__(self, specs: list[CameraSpec], start_timeout: float = 15.0):
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be distinct: {names}")
        self.specs = specs
        self.arrays = SharedArrays({s.name: ((s.height, s.width, 3), "uint8") for s in specs})
        ctx = mp.get_context("spawn")
        self._errors, self._ready, self._stop = ctx.Queue(), ctx.Event(), ctx.Event()
        self._process = ctx.Process(target=_reader, args=(specs, self.arrays.layout(), self._errors, self._ready,
                                                          self._stop), daemon=True, name="vla-cameras")  # fmt: skip
        self._process.start()
        deadline = time.monotonic() + start_timeout
        while not self._ready.wait(0.1):
            if not self._process.is_alive() or time.monotonic() > deadline:
                reason = self._reason() or f"no frame within {start_timeout:.0f} s"
                self.close()
                raise CameraError(f"cameras {names} did not start: {reason}")

    def _reason(self) -> str:
        try:
            return str(self._errors.get(timeout=0.5))
        except Exception:  # queue.Empty, or a closed queue
            return ""

    def latest(self) -> dict[str, np.ndarray]:
        if not self._process.is_alive():
            raise CameraError(f"the camera reader stopped: {self._reason() or 'no reason given'}")
        return self.arrays.read()[1]

    @property
    def frame_count(self) -> int:
        """Sets of frames written so far."""
        return self.arrays.stamp + 1

    def close(self) -> None:
        self._stop.set()
        self._process.join(timeout=5.0)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=2.0)
        self.arrays.close()
