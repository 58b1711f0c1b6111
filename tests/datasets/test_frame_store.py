"""Frame arrays: our reader agrees with zarr for every codec we write, memory stays flat, damage is named."""

from __future__ import annotations

import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import frame_image

from vla.datasets import frame_store
from vla.datasets.errors import DatasetError
from vla.datasets.frame_store import CANDIDATES, CodecMeasurement, FrameArrayReader, FrameArrayWriter, choose_codec


def frames(n: int, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    out = np.stack([frame_image(i % 5, i, 0, size) for i in range(n)])
    out[3] = 0  # an all-fill-value frame: zarr does not store its chunk at all
    return out


@pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3 specification")
@pytest.mark.parametrize("codec", list(CANDIDATES))
def test_reader_agrees_with_zarr(codec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = frames(50)
    monkeypatch.setattr(frame_store, "SHARD_BYTES", 16 * data[0].nbytes)  # 4 shards, the last one partial
    writer = FrameArrayWriter(zarr.open_group(tmp_path / "g.zarr", mode="w"), "cam", len(data), data.shape[1:],
                              tmp_path, codec=codec)
    for start in range(0, len(data), 7):
        writer.append(data[start: start + 7])
    info = writer.close()
    assert info["codec"] == codec and info["shard_frames"] == 16
    assert np.array_equal(zarr.open_array(tmp_path / "g.zarr" / "cam", mode="r")[...], data)
    reader = FrameArrayReader(tmp_path / "g.zarr" / "cam")
    for i in np.random.default_rng(0).permutation(len(data)):
        chw = reader.chw(int(i))
        assert chw.shape == (3, 24, 32) and chw.flags.c_contiguous and chw.flags.writeable
        assert np.array_equal(chw, data[i].transpose(2, 0, 1)), f"frame {i}"
    clone = pickle.loads(pickle.dumps(reader))  # what a spawned DataLoader worker gets
    assert np.array_equal(clone.chw(17), data[17].transpose(2, 0, 1))


def test_codec_choice_is_smallest_fast_enough_then_fastest() -> None:
    frame = 96 * 96 * 3
    m = [CodecMeasurement("raw", frame, 20, 200), CodecMeasurement("small-slow", 4000, 1000, 900),
         CodecMeasurement("a", 6000, 120, 500), CodecMeasurement("b", 6100, 60, 500)]
    assert choose_codec(m, frame) == "b"  # "small-slow" decodes at 28 MB/s: excluded; a and b tie within 3 %
    assert choose_codec(m[:3], frame) == "a"
    assert choose_codec([m[1]], frame) == "small-slow"  # nothing fast enough: still a choice


def test_measurement_runs_every_candidate(tmp_path: Path) -> None:
    data = np.stack([frame_image(0, t, 0, (48, 64), noise=False) for t in range(12)])  # smooth, like renders
    results = frame_store.measure_codecs(data, tmp_path)
    assert [m.name for m in results] == list(CANDIDATES)
    by_name = {m.name: m for m in results}
    assert data[0].nbytes < by_name["raw"].bytes_per_frame < data[0].nbytes + 20  # plus its shard index entry
    assert by_name["up-zstd-9"].bytes_per_frame < by_name["zstd-3"].bytes_per_frame / 2  # the prediction pays
    assert by_name["zstd-3"].bytes_per_frame < by_name["raw"].bytes_per_frame
    assert choose_codec(results, data[0].nbytes) in CANDIDATES
    assert not list(tmp_path.iterdir())  # measurement stores are removed


def test_reading_every_frame_keeps_memory_flat(tmp_path: Path) -> None:
    n, size = 400, (96, 128)
    data = np.random.default_rng(0).integers(0, 255, (n, *size, 3), dtype=np.uint8)  # 14.7 MB of frames
    writer = FrameArrayWriter(zarr.open_group(tmp_path / "g.zarr", mode="w"), "cam", n, data.shape[1:], tmp_path,
                              codec="raw")
    writer.append(data)
    writer.close()
    del data
    tracemalloc.start()
    reader = FrameArrayReader(tmp_path / "g.zarr" / "cam")
    total = 0
    for i in np.random.default_rng(1).permutation(n):
        total += int(reader.chw(int(i))[0, 0, 0])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000, f"peak {peak / 1e6:.1f} MB while reading 14.7 MB of frames one by one"


def test_damaged_or_foreign_arrays_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    data = frames(10)
    writer = FrameArrayWriter(zarr.open_group(tmp_path / "g.zarr", mode="w"), "cam", 10, data.shape[1:], tmp_path,
                              codec="zstd-3")
    writer.append(data)
    writer.close()
    shard = tmp_path / "g.zarr" / "cam" / "c" / "0" / "0" / "0" / "0"
    shard.write_bytes(shard.read_bytes()[:-7])  # truncated: the shard index at the end is gone
    with pytest.raises(DatasetError, match=r"shard index is damaged.*vla data cache --force"):
        FrameArrayReader(tmp_path / "g.zarr" / "cam").chw(0)
    zarr.create_array(tmp_path / "plain.zarr", shape=(4, 8, 8, 3), chunks=(1, 8, 8, 3), dtype="uint8")
    with pytest.raises(DatasetError, match="unsupported frame array layout"):
        FrameArrayReader(tmp_path / "plain.zarr")
