"""Statistics are exact (against numpy on the decoded data), pool several datasets exactly, and load in LeRobot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import build_dataset

from vla.datasets.cli import main
from vla.datasets.lerobot_io import LeRobotSource
from vla.datasets.stats import QUANTILES, PixelHistogram, compute_stats, lowdim_stats

FRONT = "observation.images.front"


def numpy_stats(x: np.ndarray, method: str = "linear") -> dict[str, np.ndarray]:
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}
    out.update({k: np.quantile(x, q, axis=0, method=method) for k, q in QUANTILES.items()})  # type: ignore[call-overload]
    return out


def test_lowdim_statistics_match_numpy() -> None:
    x = np.random.default_rng(0).normal(size=(101, 4)).astype(np.float32)
    stats = lowdim_stats(x)
    for name, value in numpy_stats(x.astype(np.float64)).items():
        assert np.allclose(stats[name], value, rtol=1e-12, atol=0), name
    assert stats["count"].tolist() == [101]
    scalar = lowdim_stats(np.arange(10.0))
    assert scalar["mean"].shape == (1,) and scalar["q50"].tolist() == [4.5]  # LeRobot's shape for scalars


def test_pixel_histogram_is_exact() -> None:
    frames = np.random.default_rng(1).integers(0, 256, (7, 9, 11, 3)).astype(np.uint8)
    frames[..., 2] //= 3  # channels with different ranges
    hist = PixelHistogram()
    hist.add(frames[:4])
    hist.add(frames[4:].transpose(0, 3, 1, 2), channel_axis=1)  # the cache yields channel-first blocks
    stats = hist.stats()
    pixels = frames.reshape(-1, 3) / 255.0
    want = numpy_stats(pixels, method="inverted_cdf")
    for name in ("mean", "std"):
        assert np.allclose(stats[name].ravel(), want[name], rtol=1e-12), name
    for name in ("min", "max", *QUANTILES):
        assert np.array_equal(stats[name].ravel(), want[name]), name
    assert stats["mean"].shape == (3, 1, 1) and stats["count"].tolist() == [7]


def decoded(root: Path, camera: str) -> np.ndarray:
    return np.concatenate(list(LeRobotSource(root).iter_frames(camera)))


def test_pooled_statistics_are_the_statistics_of_the_union(image_ds: Path, tmp_path: Path) -> None:
    other = build_dataset(tmp_path / "other", lengths=(3, 5, 2), use_videos=False)
    stats = compute_stats([image_ds, other], progress=False)
    a, b = LeRobotSource(image_ds).read_lowdim(), LeRobotSource(other).read_lowdim()
    for key in ("action", "observation.state", "next.reward"):
        union = np.concatenate([a[key], b[key]]).astype(np.float64).reshape(len(a[key]) + len(b[key]), -1)
        for name, value in numpy_stats(union).items():
            assert np.allclose(stats[key][name].ravel(), value, rtol=1e-9, atol=1e-12), (key, name)
        assert stats[key]["count"].tolist() == [len(union)]
    pixels = np.concatenate([decoded(image_ds, FRONT), decoded(other, FRONT)]).reshape(-1, 3) / 255.0
    want = numpy_stats(pixels, method="inverted_cdf")
    assert np.allclose(stats[FRONT]["std"].ravel(), want["std"], rtol=1e-9)
    assert np.array_equal(stats[FRONT]["q99"].ravel(), want["q99"])


def test_stats_command_writes_files_lerobot_loads(video_ds: Path, fresh_copy, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                  capsys: pytest.CaptureFixture) -> None:
    from lerobot.datasets import LeRobotDatasetMetadata

    root = fresh_copy(video_ds)
    assert main(["data", "stats", str(root), "--write", "--out", str(tmp_path / "merged.json")]) == 0
    out = capsys.readouterr().out
    assert "observation.state (count 27)" in out and "wrote" in out
    meta = LeRobotDatasetMetadata("local/test", root=root)
    assert meta.stats["observation.state"]["q01"].shape == (3,)
    assert meta.stats["next.reward"]["q99"].shape == (1,)
    assert meta.stats[FRONT]["std"].shape == (3, 1, 1)
    pixels = decoded(root, FRONT).reshape(-1, 3) / 255.0
    assert np.allclose(meta.stats[FRONT]["std"].ravel(), pixels.std(0), rtol=1e-9)  # LeRobot wrote 0.001-0.06
    assert json.loads((tmp_path / "merged.json").read_text()).keys() == json.loads(
        (root / "meta" / "stats.json").read_text()).keys()


@pytest.mark.parametrize("fps", ["thirty", 0, 29.5, True])
def test_a_damaged_frame_rate_is_one_line_naming_the_file(fps: object, video_ds: Path, fresh_copy,  # type: ignore[no-untyped-def]
                                                          capsys: pytest.CaptureFixture) -> None:
    root = fresh_copy(video_ds)
    info_path = root / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info["fps"] = fps
    info_path.write_text(json.dumps(info))
    code = main(["data", "stats", str(root)])
    err = capsys.readouterr().err
    assert code != 0 and str(info_path) in err and f"fps is {fps!r}" in err, err
    assert "Traceback" not in err and "unexpected" not in err
