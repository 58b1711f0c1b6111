"""`EpisodeWriter` commits: a recording killed between commits rolls back to its last commit on resume, keeps
every committed file byte for byte, and goes on appending; a dataset changed outside the writer is not touched."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from vla.datasets.check import check_dataset
from vla.datasets.writer import COMMIT_FILE, EpisodeWriter, uncommitted_episodes

HELPERS = Path(__file__).with_name("conftest.py")  # the dataset fakes, loaded by path here and in the child


def _load_helpers():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("dataset_fakes", HELPERS)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fakes = _load_helpers()
FPS, episode_frames, features = fakes.FPS, fakes.episode_frames, fakes.features

# Run in a child that dies like a SIGKILL (os._exit: no finalizer, no flush): two episodes committed, two saved
# after the commit, a fifth in progress.
KILLED_RECORDING = """
    import importlib.util, os
    spec = importlib.util.spec_from_file_location("dataset_fakes", {helpers!r})
    fakes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fakes)
    FPS, episode_frames, features = fakes.FPS, fakes.episode_frames, fakes.features
    from vla.datasets.writer import EpisodeWriter

    writer = EpisodeWriter({root!r}, "local/test", FPS, features(), commit_every=1e9)
    for episode, length in enumerate((5, 3, 4, 6)):
        for frame in episode_frames(episode, length):
            writer.add(frame)
        writer.save()
        if episode == 1:
            writer.commit()
    for frame in episode_frames(4, 3):
        writer.add(frame)
    os._exit(0)
"""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_killed_recording_rolls_back_to_its_last_commit_and_resumes(tmp_path: Path) -> None:
    from lerobot.datasets import LeRobotDataset

    root = tmp_path / "ds"
    script = textwrap.dedent(KILLED_RECORDING).format(helpers=str(HELPERS), root=str(root))
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)
    assert json.loads((root / "meta/info.json").read_text())["total_episodes"] == 4  # LeRobot counted all four
    assert uncommitted_episodes(root) == 2
    (problem,) = check_dataset(root)
    assert "killed with 2 episodes saved after its last commit" in problem.what and "--resume" in problem.fix
    committed = json.loads((root / COMMIT_FILE).read_text())["files"]
    digests = {name: _digest(root / name) for name in committed}
    after_commit = [p for p in (root / "data").rglob("*.parquet") if str(p.relative_to(root)) not in committed]
    assert after_commit  # the episodes saved after the commit went to files of their own

    with EpisodeWriter(root, "local/test", FPS, features(), resume=True, commit_every=1e9) as writer:
        assert writer.rolled_back == 2 and writer.num_episodes == 2
        for frame in episode_frames(7, 7):
            writer.add(frame)
        writer.save()
    assert uncommitted_episodes(root) == 0
    assert all(_digest(root / name) == digest for name, digest in digests.items())

    ds = LeRobotDataset("local/test", root=root)
    assert ds.meta.total_episodes == 3 and len(ds) == ds.meta.total_frames == 5 + 3 + 7
    lengths = [int(ds.meta.episodes[e]["length"]) for e in range(3)]
    assert lengths == [5, 3, 7]
    third = np.stack([ds[8 + t]["observation.state"].numpy() for t in range(7)])
    np.testing.assert_array_equal(third, np.stack([f["observation.state"] for f in episode_frames(7, 7)]))
    image = ds[8]["observation.images.front"]  # the video of the appended episode decodes at its place
    assert image.shape == (3, 24, 32)


def test_a_commit_that_does_not_match_the_files_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    with EpisodeWriter(root, "local/test", FPS, features()) as writer:
        for frame in episode_frames(0, 4):
            writer.add(frame)
        writer.save()
    data = next((root / "data").rglob("*.parquet"))
    with data.open("ab") as f:  # changed by something other than the writer after its commit
        f.write(b"extra")
    with pytest.raises(RuntimeError, match="cannot be rolled back safely"):
        EpisodeWriter(root, "local/test", FPS, features(), resume=True)
