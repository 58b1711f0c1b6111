"""Video decoding falls back to PyAV where torchcodec cannot load FFmpeg."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vla.datasets import video


def test_pick_backend_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video, "torchcodec_usable", lambda: False)
    assert video.pick_backend("torchcodec") == "pyav"
    assert video.pick_backend(None) == "pyav"
    assert video.pick_backend("pyav") == "pyav"
    monkeypatch.setattr(video, "torchcodec_usable", lambda: True)
    assert video.pick_backend(None) == "torchcodec"


def test_dataset_asking_for_torchcodec_decodes(video_dataset: Path) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    video.install_decoder_fallback()
    ds = LeRobotDataset("local/vla-synthetic", root=video_dataset, video_backend="torchcodec")
    frame = ds[3]["observation.images.front"]
    assert frame.shape == (3, 32, 32) and frame.dtype == torch.float32
    assert frame.max() > 0.5  # the squares are there, not a black frame
