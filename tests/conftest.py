"""Shared fixtures. Everything is built offline: tiny model configs, generated datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def decoder_fallback() -> None:
    """What importing the plugin does for users: decode video with PyAV where torchcodec cannot load."""
    from vla.datasets.video import install_decoder_fallback

    install_decoder_fallback()


@pytest.fixture(scope="session")
def video_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LeRobot v3 dataset with video storage: 4 episodes of 20 frames, one 32x32 camera, 2-D state/action."""
    from vla.datasets.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data") / "synthetic", episodes=4, length=20, image_size=32)
