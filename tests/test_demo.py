"""`vla demo` (what `make demo` runs) end to end at a tiny size: record, cache, train, roll out, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vla.cli import build_parser, run_demo


@pytest.mark.parametrize("images", [False, True], ids=["video", "images"])
def test_demo_records_trains_and_rolls_out(tmp_path: Path, capsys: pytest.CaptureFixture[str], images: bool) -> None:
    argv = ["demo", "--out", str(tmp_path / "demo"), "--env", "so101/reach", "--episodes", "2", "--steps", "2",
            "--rollouts", "2", "--batch-size", "2", "--preset", "tiny"] + (["--images"] if images else [])
    run_demo(build_parser().parse_args(argv))
    out = tmp_path / "demo"
    printed = capsys.readouterr().out
    assert ("PNG images" if images else "video") in printed.splitlines()[0]
    info = json.loads((out / "data" / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 2
    assert {info["features"][k]["dtype"] for k in info["features"] if k.startswith("observation.images.")} == (
        {"image"} if images else {"video"})
    assert any((out / "data").glob("videos/**/*.mp4")) is not images
    result = json.loads((out / "rollout" / "results.json").read_text())
    assert result["episodes"] == 2 and result["seeds"] == [1_000_000, 1_000_001]
    ckpt = out / "train" / "checkpoints" / "last" / "pretrained_model"
    assert (ckpt / "model.safetensors").is_file()
    # the checkpoint acts on the mean of eight chunks, in the demo's rollout and in any later one of it
    assert json.loads((ckpt / "config.json").read_text())["action_samples"] == 8
    assert "acting on the mean of 8 sampled chunks" in printed
    assert (out / "loss.png").is_file() and "success" in printed and "the scripted expert" in printed
