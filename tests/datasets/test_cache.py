"""The frame cache returns what LeRobotDataset returns, is rebuilt when stale, and works in DataLoader workers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import FPS, LENGTHS

from vla.datasets.cache import build_cache, cache_path, cache_status, read_manifest, resize_frames
from vla.datasets.cached_dataset import CachedLeRobotDataset, open_dataset
from vla.datasets.cli import main
from vla.datasets.errors import DatasetError

FRONT, WRIST = "observation.images.front", "observation.images.wrist"
WINDOWS = {"action": [k / FPS for k in range(-2, 6)], FRONT: [-2 / FPS, 0.0, 1 / FPS],
           "observation.state": [-1 / FPS, 0.0], "next.reward": [0.0, 1 / FPS]}  # fmt: skip


def lerobot(root: Path, **kwargs):  # type: ignore[no-untyped-def]
    from lerobot.datasets import LeRobotDataset

    return LeRobotDataset("local/test", root=root, video_backend="pyav", **kwargs)


def cached(root: Path, **kwargs) -> CachedLeRobotDataset:  # type: ignore[no-untyped-def]
    return CachedLeRobotDataset("local/test", root=root, progress=False, **kwargs)


def edge_and_random_indices(n: int, seed: int = 0) -> list[int]:
    starts = np.cumsum([0, *LENGTHS[:-1]])
    edges = {int(i) for s, length in zip(starts, LENGTHS, strict=True)
             for i in (s, s + 1, s + length - 2, s + length - 1) if s <= i < s + length}
    return sorted(edges | {int(i) for i in np.random.default_rng(seed).integers(0, n, 8)})


def assert_same_item(want: dict, got: dict, where: str) -> None:
    assert set(got) == set(want), f"{where}: keys differ: {set(got) ^ set(want)}"
    for key, value in want.items():
        if isinstance(value, str | list):  # task, or a batch of tasks
            assert got[key] == value, f"{where} {key}"
            continue
        assert got[key].dtype == value.dtype, f"{where} {key}: {got[key].dtype} != {value.dtype}"
        assert got[key].shape == value.shape, f"{where} {key}: {tuple(got[key].shape)} != {tuple(value.shape)}"
        assert torch.equal(got[key], value), f"{where} {key}: max diff {(got[key].float() - value.float()).abs().max()}"


@pytest.mark.parametrize("storage", ["video", "image"])
def test_samples_equal_lerobot_with_windows_at_episode_edges(storage: str, request: pytest.FixtureRequest,
                                                            fresh_copy) -> None:  # type: ignore[no-untyped-def]
    root = fresh_copy(request.getfixturevalue(f"{storage}_ds"))
    want, got = lerobot(root, delta_timestamps=WINDOWS), cached(root, delta_timestamps=WINDOWS)
    assert len(got) == len(want) == sum(LENGTHS)
    for i in edge_and_random_indices(len(want)):
        assert_same_item(want[i], got[i], f"{storage} index {i}")
    first = got[0]  # the window really crosses the episode start: two padded steps, clamped to frame 0
    assert first["action_is_pad"].tolist() == [True, True] + [False] * 6
    assert first[FRONT].shape == (3, 3, 24, 32)
    assert torch.equal(first[FRONT][0], first[FRONT][1])
    one_frame_episode = sum(LENGTHS[:3])  # episode 3 has a single frame: every other step is padding
    assert got[one_frame_episode]["action_is_pad"].tolist() == [True, True, False] + [True] * 5


def test_plain_items_subsets_and_image_transforms(video_ds: Path, fresh_copy) -> None:  # type: ignore[no-untyped-def]
    root = fresh_copy(video_ds)

    def flip(x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1) * 0.5

    want, got = lerobot(root, image_transforms=flip), cached(root, image_transforms=flip)
    for i in (0, 5, 19, len(want) - 1):
        assert_same_item(want[i], got[i], f"index {i}")
    subset = [1, 3]
    want, got = lerobot(root, episodes=subset), cached(root, episodes=subset)
    assert len(got) == len(want) == LENGTHS[1] + LENGTHS[3] and got.num_episodes == 2
    for i in range(len(want)):
        assert_same_item(want[i], got[i], f"subset index {i}")
    with pytest.raises(IndexError):
        got[len(got)]


def test_resized_cache_equals_resized_lerobot_frames(video_ds: Path, fresh_copy) -> None:  # type: ignore[no-untyped-def]
    root = fresh_copy(video_ds)
    got = CachedLeRobotDataset("local/test", root=root, size=(16, 20), progress=False)
    want = lerobot(root)
    assert got.meta.features[FRONT]["shape"] == (16, 20, 3)  # the policy is told the size it will see
    assert cache_status(root).frame_size == (16, 20)
    for i in (0, 7, 26):
        for cam in (FRONT, WRIST):
            ref = (want[i][cam] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()[None]
            expected = torch.from_numpy(resize_frames(ref, (16, 20))[0]).permute(2, 0, 1).float() / 255
            assert torch.equal(got[i][cam], expected), f"index {i} {cam}"
    rewrite_action(root, 1.0)  # a stale resized cache is rebuilt at the size the user chose
    assert cached(root)[0][FRONT].shape == (3, 16, 20) and cache_status(root).valid
    assert main(["data", "cache", str(root), "--force"]) == 0  # so is a forced rebuild
    assert cache_status(root).frame_size == (16, 20)


def rewrite_action(root: Path, delta: float) -> str:
    rel = "data/chunk-000/file-000.parquet"
    table = pq.read_table(root / rel)
    action = np.stack(table.column("action").to_numpy(zero_copy_only=False)) + np.float32(delta)
    column = pa.FixedSizeListArray.from_arrays(pa.array(action.astype(np.float32).ravel()), 3)
    pq.write_table(table.set_column(table.schema.get_field_index("action"), "action", column), root / rel)
    return rel


def test_stale_cache_is_detected_and_rebuilt_never_used(video_ds: Path, fresh_copy) -> None:  # type: ignore[no-untyped-def]
    root = fresh_copy(video_ds)
    assert cache_status(root).state == "missing"
    build_cache(root, progress=False)
    assert cache_status(root).valid
    before = cached(root)[2]["action"]
    (root / "meta" / "stats.json").write_text((root / "meta" / "stats.json").read_text())  # stats do not matter
    assert cache_status(root).valid

    rel = rewrite_action(root, 1.0)
    status = cache_status(root)
    assert status.state == "stale" and rel in status.reason
    after = cached(root)  # rebuilds
    assert torch.equal(after[2]["action"], before + 1.0)
    assert torch.equal(after[2]["action"], lerobot(root)[2]["action"])
    assert cache_status(root).valid

    stale_size = cache_status(root, size=(16, 20))
    assert stale_size.state == "stale" and "16x20" in stale_size.reason


def test_same_size_edit_inside_a_file_is_stale_and_a_touched_copy_is_not(video_ds: Path, fresh_copy) -> None:  # type: ignore[no-untyped-def]
    root = fresh_copy(video_ds)
    build_cache(root, progress=False)
    video = sorted((root / "videos").rglob("*.mp4"))[0]
    rel = str(video.relative_to(root))

    os.utime(video, ns=(1, 1))  # as after a copy: other times, same content
    assert cache_status(root).valid
    stamps = read_manifest(cache_path(root))["dataset"]["stamps"]  # type: ignore[index]
    assert stamps[rel][1] == 1  # the new time is remembered: the next check does not hash the file again

    data = bytearray(video.read_bytes())
    data[len(data) // 2] ^= 0xFF
    video.write_bytes(bytes(data))
    status = cache_status(root)
    assert status.state == "stale" and rel in status.reason


def test_fingerprint_covers_the_whole_file(tmp_path: Path) -> None:
    """Test videos are a few KB; real ones are large, where hashing only the edges would miss a middle edit."""
    from vla.datasets.lerobot_io import file_fingerprint

    big = tmp_path / "big.bin"
    data = bytearray(np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes())
    big.write_bytes(bytes(data))
    before = file_fingerprint(big)
    data[len(data) // 2] ^= 0x01
    big.write_bytes(bytes(data))
    assert file_fingerprint(big) != before and file_fingerprint(big).split(":")[0] == before.split(":")[0]


def test_interrupted_build_leaves_no_cache_and_keeps_the_old_one(video_ds: Path, fresh_copy,  # type: ignore[no-untyped-def]
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from vla.datasets.lerobot_io import LeRobotSource

    root = fresh_copy(video_ds)
    original = LeRobotSource.iter_frames

    def dies_after_one_block(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        yield next(original(self, *args, **kwargs))
        raise KeyboardInterrupt

    monkeypatch.setattr(LeRobotSource, "iter_frames", dies_after_one_block)
    with pytest.raises(KeyboardInterrupt):
        build_cache(root, progress=False)
    assert cache_status(root).state == "missing"
    assert sorted(p.name for p in root.parent.iterdir()) == [root.name]  # no half-built directory left behind

    monkeypatch.setattr(LeRobotSource, "iter_frames", original)
    build_cache(root, progress=False)
    monkeypatch.setattr(LeRobotSource, "iter_frames", dies_after_one_block)
    with pytest.raises(KeyboardInterrupt):
        build_cache(root, progress=False)
    assert cache_status(root).valid  # the previous cache is replaced only by a finished build


def test_dataloader_workers_give_the_same_batches(video_ds: Path, fresh_copy) -> None:  # type: ignore[no-untyped-def]
    root = fresh_copy(video_ds)
    want = lerobot(root, delta_timestamps=WINDOWS)
    got = cached(root, delta_timestamps=WINDOWS)
    ours = torch.utils.data.DataLoader(got, batch_size=8, num_workers=2, shuffle=False)
    theirs = torch.utils.data.DataLoader(want, batch_size=8, num_workers=0, shuffle=False)
    batches = 0
    for a, b in zip(theirs, ours, strict=True):
        assert_same_item(a, b, f"batch {batches}")
        batches += 1
    assert batches == 4


def test_open_dataset_follows_the_mode(video_ds: Path, fresh_copy, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from lerobot.datasets import LeRobotDataset

    root = fresh_copy(video_ds)
    monkeypatch.delenv("VLA_FRAME_CACHE", raising=False)
    assert type(open_dataset("local/test", root)) is LeRobotDataset  # auto, no cache yet
    assert not cache_path(root).exists()
    assert isinstance(open_dataset("local/test", root, mode="on"), CachedLeRobotDataset)  # builds it
    assert isinstance(open_dataset("local/test", root), CachedLeRobotDataset)  # auto finds it
    monkeypatch.setenv("VLA_FRAME_CACHE", "off")
    assert type(open_dataset("local/test", root)) is LeRobotDataset
    monkeypatch.setenv("VLA_FRAME_CACHE", "sometimes")
    with pytest.raises(DatasetError, match="VLA_FRAME_CACHE"):
        open_dataset("local/test", root)


def test_vla_train_datasets_come_from_the_cache(video_ds: Path, fresh_copy, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from vla.train import datasets_with_cache

    root = fresh_copy(video_ds)
    build_cache(root, progress=False)
    monkeypatch.delenv("VLA_FRAME_CACHE", raising=False)
    policy = SimpleNamespace(observation_delta_indices=None, reward_delta_indices=None,
                             action_delta_indices=list(range(8)))
    cfg = SimpleNamespace(trainable_config=policy, tolerance_s=1e-4, dataset=SimpleNamespace(
        repo_id="local/test", root=root, episodes=None, revision=None, video_backend="pyav", streaming=False,
        eval_split=0.0, use_imagenet_stats=False, image_transforms=SimpleNamespace(enable=False)))

    def lerobots(cfg: object) -> tuple[str, None]:
        return "lerobot's", None

    dataset, held_out = datasets_with_cache(cfg, lerobots)
    assert isinstance(dataset, CachedLeRobotDataset) and held_out is None
    item = dataset[3]
    assert item["action"].shape == (8, 3) and item[FRONT].dtype == torch.uint8  # lerobot-train's uint8 transport
    assert torch.equal(item[FRONT].float().div_(255), cached(root)[3][FRONT])
    cfg.dataset.eval_split = 0.1  # a held-out split: LeRobot's own function
    assert datasets_with_cache(cfg, lerobots) == ("lerobot's", None)
    cfg.dataset.eval_split = 0.0
    monkeypatch.setenv("VLA_FRAME_CACHE", "off")  # no cache: exactly what lerobot-train does
    assert datasets_with_cache(cfg, lerobots) == ("lerobot's", None)


def test_uint8_frames_are_the_float_frames_times_255(video_ds: Path, fresh_copy) -> None:  # type: ignore[no-untyped-def]
    root = fresh_copy(video_ds)
    floats = cached(root, delta_timestamps=WINDOWS)
    raw = cached(root, delta_timestamps=WINDOWS, frame_dtype="uint8")
    loader = torch.utils.data.DataLoader(raw, batch_size=8, num_workers=2, shuffle=False)
    for b, batch in enumerate(loader):
        rows = range(8 * b, 8 * b + len(batch["index"]))
        for cam in (FRONT, WRIST):
            assert batch[cam].dtype == torch.uint8
            want = torch.stack([floats[i][cam] for i in rows])
            assert torch.equal(batch[cam].float().div_(255), want), cam  # exactly what the policy computes
        assert torch.equal(batch["action"], torch.stack([floats[i]["action"] for i in rows]))
    # image transforms need floats: the dataset says so and returns them
    assert cached(root, image_transforms=lambda x: x, frame_dtype="uint8")[0][FRONT].dtype == torch.float32
    with pytest.raises(ValueError, match="frame_dtype"):
        cached(root, frame_dtype="float16")


def test_episode_subset_works_with_lerobots_sampler(video_ds: Path, fresh_copy) -> None:  # type: ignore[no-untyped-def]
    from lerobot.datasets import EpisodeAwareSampler

    root = fresh_copy(video_ds)
    dataset = cached(root, episodes=[1, 2])
    sampler = EpisodeAwareSampler(dataset.meta.episodes["dataset_from_index"],
                                  dataset.meta.episodes["dataset_to_index"], episode_indices_to_use=dataset.episodes,
                                  shuffle=False, absolute_to_relative_idx=dataset.absolute_to_relative_idx)
    items = [dataset[i] for i in sampler]
    assert len(items) == len(dataset)  # every frame of the two episodes, each once
    assert {int(item["episode_index"]) for item in items} == {1, 2}
    assert sorted(int(item["index"]) for item in items) == sorted(int(r) for r in dataset.absolute_to_relative_idx)
