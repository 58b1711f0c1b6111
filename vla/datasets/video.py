"""Video decoding that works on machines where torchcodec cannot load FFmpeg.

LeRobot 0.4.4 picks torchcodec whenever the package is installed, even when its native library cannot find an
FFmpeg it supports, and then every video frame read raises. `install_decoder_fallback()` (run when our LeRobot
plugin is imported, i.e. by `lerobot-train` and `lerobot-eval`) wraps LeRobot's frame decoder: the first request
for torchcodec tests whether it loads, and if it does not, that and every later read use PyAV instead, with one
warning that says so.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


@functools.cache
def torchcodec_usable() -> bool:
    try:
        import torchcodec.decoders  # noqa: F401  (loads the native library and FFmpeg)
    except Exception as err:  # OSError, RuntimeError, ImportError depending on what is missing
        log.warning("torchcodec cannot decode video here (%s); decoding with PyAV instead",
                    str(err).splitlines()[0])
        return False
    return True


def pick_backend(backend: str | None) -> str:
    if backend in (None, "torchcodec"):
        return "torchcodec" if torchcodec_usable() else "pyav"
    return backend


def install_decoder_fallback() -> None:
    import lerobot.datasets.lerobot_dataset as lerobot_dataset

    original = lerobot_dataset.decode_video_frames
    if getattr(original, "vla_fallback", False):
        return

    def decode_video_frames(video_path: Path | str, timestamps: list[float], tolerance_s: float,
                            backend: str | None = None) -> torch.Tensor:
        return original(video_path, timestamps, tolerance_s, pick_backend(backend))

    setattr(decode_video_frames, "vla_fallback", True)  # noqa: B010
    lerobot_dataset.decode_video_frames = decode_video_frames  # type: ignore[assignment]


def default_backend() -> str:
    return pick_backend(None)


__all__: list[Any] = ["default_backend", "install_decoder_fallback", "pick_backend", "torchcodec_usable"]
