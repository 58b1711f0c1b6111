"""LeRobot v3 <-> zarr replay buffer: exact round trips, foreign buffers, and clear errors on bad buffers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from vla.datasets.cli import main
from vla.datasets.errors import DatasetError
from vla.datasets.lerobot_io import LeRobotSource
from vla.datasets.replay_buffer import lerobot_to_zarr, open_replay_buffer, zarr_to_lerobot


def tasks_per_frame(root: Path) -> list[str]:
    import pyarrow.parquet as pq

    names = list(pq.read_table(root / "meta" / "tasks.parquet").to_pandas().sort_values("task_index").index)
    return [names[i] for i in LeRobotSource(root).read_lowdim(["task_index"])["task_index"]]


def assert_same_dataset(a: Path, b: Path) -> None:
    sa, sb = LeRobotSource(a), LeRobotSource(b)
    assert sa.fps == sb.fps and set(sa.features) == set(sb.features)
    assert [ep.length for ep in sa.episodes] == [ep.length for ep in sb.episodes]
    la, lb = sa.read_lowdim(), sb.read_lowdim()
    for key in la:
        assert la[key].dtype == lb[key].dtype and np.array_equal(la[key], lb[key]), key  # bit-exact
    for cam in sa.cameras:
        assert np.array_equal(np.concatenate(list(sa.iter_frames(cam))), np.concatenate(list(sb.iter_frames(cam)))), cam
    assert tasks_per_frame(a) == tasks_per_frame(b)


def test_lerobot_to_zarr_and_back_is_exact(image_ds: Path, tmp_path: Path) -> None:
    buffer = lerobot_to_zarr(image_ds, tmp_path / "rb.zarr", progress=False)
    assert (buffer / "data" / "state" / ".zarray").is_file()  # zarr format 2, as Diffusion Policy's zarr reads
    rb = open_replay_buffer(buffer)
    assert rb.episode_ends.tolist() == [6, 15, 19, 20, 27]
    assert rb.arrays["front"].shape == (27, 24, 32, 3) and rb.arrays["front"].dtype == np.uint8
    assert rb.attrs["fps"] == 10 and rb.attrs["tasks"] == ["pick up the cube", "open the drawer"]
    back = zarr_to_lerobot(buffer, tmp_path / "back", progress=False)
    assert_same_dataset(image_ds, back)

    again = lerobot_to_zarr(back, tmp_path / "again.zarr", zarr_format=3, progress=False)  # and zarr v3 too
    first, second = open_replay_buffer(buffer), open_replay_buffer(again)
    assert set(first.arrays) == set(second.arrays)
    for key, array in first.arrays.items():
        assert np.array_equal(array[...], second.arrays[key][...]), key


def test_video_dataset_exports_the_frames_lerobot_decodes(video_ds: Path, tmp_path: Path) -> None:
    from lerobot.datasets import LeRobotDataset

    rb = open_replay_buffer(lerobot_to_zarr(video_ds, tmp_path / "rb.zarr", progress=False))
    ds = LeRobotDataset("local/test", root=video_ds, video_backend="pyav")
    for i in (0, 14, 19, 26):
        frame = (ds[i]["observation.images.wrist"] * 255).round().byte().permute(1, 2, 0).numpy()
        assert np.array_equal(rb.arrays["wrist"][i], frame), i


def diffusion_policy_buffer(path: Path, ends: list[int], image_dtype: str = "uint8") -> dict[str, np.ndarray]:
    """A buffer as Diffusion Policy writes it: zarr 2, no attributes, pusht-like keys."""
    rng = np.random.default_rng(0)
    n = ends[-1]
    data = {"img": rng.integers(0, 256, (n, 16, 16, 3)).astype(image_dtype),
            "state": rng.normal(size=(n, 5)).astype(np.float32), "action": rng.normal(size=(n, 2)).astype(np.float32),
            "n_contacts": rng.integers(0, 4, (n, 1)).astype(np.float32), "timestamp": np.arange(n) * 0.1 + 1.7e9}
    root = zarr.open_group(path, mode="w", zarr_format=2)
    for key, values in data.items():
        root.create_array(f"data/{key}", data=values, chunks=(min(n, 8), *values.shape[1:]))
    root.create_array("meta/episode_ends", data=np.array(ends, np.int64))
    return data


def test_foreign_buffer_with_fps_and_task_from_the_command_line(tmp_path: Path) -> None:
    from lerobot.datasets import LeRobotDataset

    data = diffusion_policy_buffer(tmp_path / "pusht.zarr", [5, 12, 15])
    args = ["data", "convert", str(tmp_path / "pusht.zarr"), str(tmp_path / "out"), "--fps", "10", "--task",
            "push the T into place", "--map", "n_contacts="]
    assert main(args) == 0
    ds = LeRobotDataset("local/out", root=tmp_path / "out")
    assert len(ds) == 15 and ds.num_episodes == 3 and ds.fps == 10
    assert set(ds.meta.features) >= {"observation.images.img", "observation.state", "action"}
    assert "observation.n_contacts" not in ds.meta.features and "observation.timestamp" not in ds.meta.features
    item = ds[7]
    assert item["task"] == "push the T into place" and item["episode_index"] == 1 and item["frame_index"] == 2
    assert np.array_equal(item["observation.state"].numpy(), data["state"][7])
    assert np.array_equal((item["observation.images.img"] * 255).round().byte().permute(1, 2, 0).numpy(),
                          data["img"][7])  # image storage: pixel-exact

    assert main(["data", "convert", str(tmp_path / "out"), str(tmp_path / "back.zarr")]) == 0
    back = open_replay_buffer(tmp_path / "back.zarr")
    assert back.episode_ends.tolist() == [5, 12, 15]
    for key in ("img", "state", "action"):
        assert np.array_equal(back.arrays[key][...], data[key]), key


def test_bad_buffers_give_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    diffusion_policy_buffer(tmp_path / "rb.zarr", [5, 5, 9])
    with pytest.raises(DatasetError, match="pass --fps"):
        zarr_to_lerobot(tmp_path / "rb.zarr", tmp_path / "o1", task="t", progress=False)
    with pytest.raises(DatasetError, match="pass --task"):
        zarr_to_lerobot(tmp_path / "rb.zarr", tmp_path / "o2", fps=10, progress=False)
    with pytest.raises(DatasetError, match=r"episodes \[1\] are empty.*--skip-empty"):
        zarr_to_lerobot(tmp_path / "rb.zarr", tmp_path / "o3", fps=10, task="t", progress=False)
    out = zarr_to_lerobot(tmp_path / "rb.zarr", tmp_path / "o4", fps=10, task="t", skip_empty=True, progress=False)
    assert [ep.length for ep in LeRobotSource(out).episodes] == [5, 4]
    assert not list(tmp_path.glob(".o*"))  # the failed runs left no temporary directories

    diffusion_policy_buffer(tmp_path / "float.zarr", [4], image_dtype="float32")
    with pytest.raises(DatasetError, match=r"data/img: looks like images .* but is float32"):
        zarr_to_lerobot(tmp_path / "float.zarr", tmp_path / "o5", fps=10, task="t", progress=False)

    short = zarr.open_group(tmp_path / "rb.zarr", mode="a")
    short.create_array("data/extra", data=np.zeros(3, np.float32), overwrite=True)
    with pytest.raises(DatasetError, match="data/extra: has 3 rows, episode_ends says 9"):
        open_replay_buffer(tmp_path / "rb.zarr")

    for args, message in (
        (["data", "convert", str(tmp_path / "nothing.zarr"), str(tmp_path / "o6")], "does not exist"),
        (["data", "convert", str(tmp_path), str(tmp_path / "o7")], "is not a replay buffer"),
        (["data", "convert", str(tmp_path / "float.zarr"), str(tmp_path / "o4")], "already exists"),
        (["data", "convert", str(tmp_path / "float.zarr"), str(tmp_path / "o8"), "--map", "img"], "KEY=FEATURE"),
    ):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, err
