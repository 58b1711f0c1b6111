"""Argument types for the `vla` command line: each rejects a bad value with a one-line message that names the
flag's rule (argparse prefixes the flag), so no command starts with a value it cannot use."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def number(kind: Callable[[str], float], low: float | None = None, high: float | None = None,
           above: float | None = None) -> Callable[[str], float]:  # fmt: skip
    """An int or float type with bounds: `low <= v <= high`, and `v > above`."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if (low is not None and value < low) or (high is not None and value > high) or (
                above is not None and value <= above):  # fmt: skip
            rule = " and ".join(r for r in (f">= {low}" if low is not None else "", f"<= {high}" if high is not None
                                else "", f"> {above}" if above is not None else "") if r)  # fmt: skip
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def size_wxh(text: str) -> tuple[int, int]:
    """An image size as every `vla` command takes it, width x height as cameras and video tools write it
    ('640x480'), returned in array order: (height, width). Raises ValueError naming the expected form."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        if w < 1 or h < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"must look like 640x480 (width x height, both >= 1), got {text!r}") from None
    return h, w


def names_list(text: str) -> tuple[str, ...]:
    """Comma-separated names ('close,wrist'), at least one, none repeated."""
    names = tuple(n.strip() for n in text.split(","))
    if not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"must be distinct names separated by commas (e.g. close,wrist), got {text!r}")
    return names


PORT = number(int, 0, 65535)
POSITIVE_INT = number(int, 1)
POSITIVE = number(float, above=0)


def checkpoint_dir(text: str) -> Path:
    """A saved policy: a directory with config.json (`.../checkpoints/last/pretrained_model`)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is not a directory; pass a checkpoint's pretrained_model directory")
    if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        raise argparse.ArgumentTypeError(f"{path} has no config.json: not a saved policy (pass the pretrained_model "
                                         "directory inside a checkpoint)")  # fmt: skip
    return path
