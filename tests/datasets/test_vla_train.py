"""`vla train` is `lerobot-train` reading the frame cache; `lerobot-train` itself is left as LeRobot wrote it."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vla.datasets.cli import main
from vla.train import PATCHED_MODULE, PATCHED_NAME, check_seam

BIN = Path(sys.executable).parent


def test_the_replaced_lerobot_name_is_still_there_with_its_signature() -> None:
    """Fails as soon as LeRobot renames or re-signs the one function `vla train` replaces."""
    import importlib

    module = importlib.import_module(PATCHED_MODULE)
    original = check_seam(module)
    assert list(inspect.signature(original).parameters) == ["cfg"]
    assert "make_train_eval_datasets(cfg)" in inspect.getsource(module.train)  # train() still builds data there

    class Renamed:
        pass

    with pytest.raises(RuntimeError, match="is gone"):
        check_seam(Renamed())
    resigned = type("M", (), {PATCHED_NAME: staticmethod(lambda cfg, accelerator: None)})
    with pytest.raises(RuntimeError, match="now takes"):
        check_seam(resigned)


def train(command: list[str], root: Path, out: Path, workers: int) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("VLA_FRAME_CACHE", None)  # the default, auto: use the cache because it exists
    args = [*command, "--policy.type=vla", "--policy.preset=tiny", "--policy.chunk_size=4",
            "--policy.n_action_steps=4", "--dataset.repo_id=local/test", f"--dataset.root={root}",
            f"--output_dir={out}", "--steps=2", "--save_freq=2", "--batch_size=4", f"--num_workers={workers}",
            "--log_freq=1", "--policy.push_to_hub=false", "--policy.device=cpu", "--wandb.enable=false",
            "--env_eval_freq=0"]  # fmt: skip
    proc = subprocess.run(args, cwd=out.parent, env=env, capture_output=True, text=True, timeout=600)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-5000:]
    assert "step:2" in text
    return text


def input_shape(out: Path) -> list[int]:
    config = json.loads((out / "checkpoints" / "000002" / "pretrained_model" / "config.json").read_text())
    return config["input_features"]["observation.images.front"]["shape"]


@pytest.mark.slow
def test_vla_train_reads_the_cache_and_lerobot_train_does_not(video_ds: Path, fresh_copy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = fresh_copy(video_ds)
    assert main(["data", "cache", str(root), "--size", "20x16"]) == 0  # width x height the dataset does not have
    # two DataLoader workers under LeRobot's default `spawn` context: the dataset crosses to them by pickling
    text = train([str(BIN / "vla"), "train"], root, tmp_path / "ours", workers=2)
    assert "using frame cache" in text and "uint8 frames" in text
    assert input_shape(tmp_path / "ours") == [3, 16, 20]  # built from the cached frames, not the stored 24x32

    text = train([str(BIN / "lerobot-train")], root, tmp_path / "theirs", workers=0)
    assert "using frame cache" not in text  # importing our plugin changed nothing in LeRobot's training
    assert input_shape(tmp_path / "theirs") == [3, 24, 32]
