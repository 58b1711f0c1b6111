"""Camera frames in zarr v3 arrays: written with a compressor picked by measurement, read back without zarr.

A frame array is (N, H, W, 3) uint8 with one chunk per frame (random access reads exactly one frame), grouped into
shards of about `SHARD_BYTES` so that a large dataset is a few hundred files, not millions. Any zarr v3 reader
opens it.

What is unusual:
- The compressor is chosen per array by measurement on a sample of its own frames (`measure_codecs`): the
  smallest on disk among those that decode at `MIN_DECODE_MB_S` or more (PNG's speed, so never slower than
  LeRobot's image storage), a near-tie going to the faster one. The "up" candidates predict each pixel from the
  one above it (PNG's "Up" filter) with codecs zarr already has: transpose each frame to (W, 3, H), take byte
  differences (numcodecs delta; consecutive bytes are now vertical neighbours), then byte-shuffle with element
  size 3*H, which puts the differences back in (3, H, W) row order, where zstd compresses them best. On sim frames
  decoded from video this is 5.2x at 96x96 and 8.0x at 224x224 with zstd 9 (PNG of the same frames: 4.4x, 7.1x;
  zstd 3 on the plain (H, W, 3) frame: 3.1x, 5.4x; the differences left in column order: 3.9x, 6.3x). Delta and
  shuffle are numcodecs codecs, not in the zarr v3 core spec: zarr-python reads them, other implementations may
  not.
- Reading goes through `FrameArrayReader`, not zarr: zarr-python spends about 1 ms of Python and asyncio per
  `array[i]` (measured: 1.1-1.5 ms per frame, batched or not), more than the whole budget of a training sample.
  The reader parses the array's zarr.json, accepts exactly the codec chains this module writes (anything else is
  refused with a clear error), and reads a frame with one `pread` and one decompression call; the "up" chain is
  undone in (3, H, W) order directly (a cumulative sum down each column plus the carry between columns, which is
  what reversing the transpose-delta-shuffle amounts to). It returns (3, H, W), channel-first like torch. Tests
  check it against zarr itself for every candidate.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla.datasets.errors import DatasetError

SHARD_BYTES = 32 << 20  # raw frame bytes per shard file
MIN_DECODE_MB_S = 100.0  # decoded bytes/s on one core for a codec to be eligible: PNG decodes 96x96 at ~100 MB/s
SIZE_SLACK = 1.03  # codecs within 3% of the smallest count as equally small; the fastest of those wins
SAMPLE_FRAMES = 64  # frames the measurement encodes and decodes with every candidate
MAX_OPEN_FILES = 64  # shard files a reader keeps open (an LRU), per process
EMPTY = np.uint64(2**64 - 1)  # shard index entry of a chunk that was not written (all fill value)
# (1, H, W, C) chunk -> (1, W, C, H): consecutive bytes are vertical neighbours. Not (0, 3, 2, 1): that view is
# Fortran-contiguous, numcodecs' delta then flattens it in memory order and zarr 3.1 no longer round-trips it.
VERTICAL = (0, 2, 3, 1)

# name -> (vertical prediction?, compressor as zarr writes it, or None)
CANDIDATES: dict[str, tuple[bool, dict | None]] = {
    "raw": (False, None),
    "blosc-lz4": (False, {"name": "blosc", "configuration": {"cname": "lz4", "clevel": 5, "shuffle": "noshuffle"}}),
    "zstd-3": (False, {"name": "zstd", "configuration": {"level": 3}}),
    "up-zstd-3": (True, {"name": "zstd", "configuration": {"level": 3}}),
    "up-zstd-9": (True, {"name": "zstd", "configuration": {"level": 9}}),
}


@dataclass(frozen=True)
class CodecMeasurement:
    name: str
    bytes_per_frame: float
    decode_us: float  # per frame, through FrameArrayReader
    encode_us: float  # per frame, through zarr

    def decode_mb_s(self, frame_bytes: int) -> float:
        return frame_bytes / max(self.decode_us, 1e-3)


def zarr_codecs(name: str, frame_shape: tuple[int, int, int]) -> dict[str, Any]:
    """Keyword arguments of `zarr.create_array` for candidate `name` and frames of (H, W, C)."""
    from zarr.codecs import BloscCodec, BytesCodec, TransposeCodec, ZstdCodec
    from zarr.codecs.numcodecs import Delta, Shuffle

    up, comp = CANDIDATES[name]
    compressors: list = []
    if up:
        h, _, c = frame_shape
        compressors.append(Shuffle(elementsize=c * h))
    if comp is not None and comp["name"] == "zstd":
        compressors.append(ZstdCodec(**comp["configuration"]))
    elif comp is not None:
        compressors.append(BloscCodec(typesize=1, **comp["configuration"]))
    filters = [TransposeCodec(order=VERTICAL), Delta(dtype="u1")] if up else []
    return {"filters": filters, "serializer": BytesCodec(), "compressors": compressors}


def create_frame_array(group: Any, name: str, n_frames: int, frame_shape: tuple[int, int, int], codec: str,
                       shard_frames: int) -> Any:
    with warnings.catch_warnings():  # "numcodecs.delta is not in the zarr v3 spec": we document that instead
        warnings.simplefilter("ignore")
        return group.create_array(
            name, shape=(n_frames, *frame_shape), dtype="uint8", chunks=(1, *frame_shape),
            shards=(shard_frames, *frame_shape), fill_value=0, **zarr_codecs(codec, frame_shape),
        )  # fmt: skip


def measure_codecs(sample: np.ndarray, workdir: Path) -> list[CodecMeasurement]:
    """Encode `sample` (n, H, W, 3) uint8 with every candidate into `workdir` and time decoding it back."""
    import zarr

    results = []
    for name in CANDIDATES:
        path = workdir / f"measure-{name}.zarr"
        shutil.rmtree(path, ignore_errors=True)
        group = zarr.open_group(path, mode="w")
        array = create_frame_array(group, "frames", len(sample), sample.shape[1:], name, len(sample))
        start = time.perf_counter()
        array[:] = sample
        encode = time.perf_counter() - start
        size = sum(f.stat().st_size for f in (path / "frames" / "c").rglob("*") if f.is_file())
        reader = FrameArrayReader(path / "frames")
        reader.chw(0)  # open the file and read the shard index outside the timing
        start = time.perf_counter()
        for i in range(len(sample)):
            reader.chw(i)
        decode = time.perf_counter() - start
        reader.close()
        n = len(sample)
        results.append(CodecMeasurement(name, size / n, decode / n * 1e6, encode / n * 1e6))
        shutil.rmtree(path, ignore_errors=True)
    return results


def choose_codec(measurements: list[CodecMeasurement], frame_bytes: int) -> str:
    """Smallest among the codecs fast enough to decode; near-ties (within SIZE_SLACK) go to the faster decoder."""
    fast = [m for m in measurements if m.decode_mb_s(frame_bytes) >= MIN_DECODE_MB_S] or measurements
    smallest = min(m.bytes_per_frame for m in fast)
    near = [m for m in fast if m.bytes_per_frame <= smallest * SIZE_SLACK]
    return min(near, key=lambda m: m.decode_us).name


class FrameArrayWriter:
    """Write (N, H, W, 3) frames block by block; the codec is measured on the first shard's frames.

    Memory: one shard buffer (`SHARD_BYTES`)."""

    def __init__(self, group: Any, name: str, n_frames: int, frame_shape: tuple[int, int, int], workdir: Path,
                 codec: str | None = None):
        self.group, self.name, self.n_frames = group, name, n_frames
        self.frame_shape: tuple[int, int, int] = frame_shape
        self.workdir, self.codec = workdir, codec
        frame_bytes = int(np.prod(frame_shape))
        self.shard_frames = max(1, min(n_frames, SHARD_BYTES // frame_bytes))
        self.buffer = np.empty((self.shard_frames, *frame_shape), np.uint8)
        self.filled = 0  # frames in the buffer
        self.written = 0  # frames already in the array
        self.array: Any = None
        self.measurements: list[CodecMeasurement] = []

    def append(self, block: np.ndarray) -> None:
        if block.shape[1:] != self.frame_shape or block.dtype != np.uint8:
            raise ValueError(f"{self.name}: expected uint8 frames {self.frame_shape}, got {block.dtype} "
                             f"{block.shape[1:]}")
        while len(block):
            take = min(len(block), self.shard_frames - self.filled)
            self.buffer[self.filled: self.filled + take] = block[:take]
            self.filled += take
            block = block[take:]
            if self.filled == self.shard_frames:
                self._flush()

    def _flush(self) -> None:
        if not self.filled:
            return
        if self.written + self.filled > self.n_frames:
            raise ValueError(f"{self.name}: more frames than the {self.n_frames} announced")
        if self.array is None:
            if self.codec is None:
                pick = np.linspace(0, self.filled - 1, min(SAMPLE_FRAMES, self.filled)).round().astype(int)
                self.measurements = measure_codecs(self.buffer[pick], self.workdir)
                self.codec = choose_codec(self.measurements, int(np.prod(self.frame_shape)))
            self.array = create_frame_array(self.group, self.name, self.n_frames, self.frame_shape, self.codec,
                                            self.shard_frames)
        self.array[self.written: self.written + self.filled] = self.buffer[: self.filled]
        self.written += self.filled
        self.filled = 0

    def close(self) -> dict[str, Any]:
        """Flush; returns what the manifest records about this array."""
        self._flush()
        if self.written != self.n_frames:
            raise ValueError(f"{self.name}: got {self.written} frames, {self.n_frames} announced")
        return {"codec": self.codec, "shard_frames": self.shard_frames,
                "measurements": [asdict(m) for m in self.measurements]}


class FrameArrayReader:
    """Random access to one frame array written by `FrameArrayWriter` (or any zarr v3 array of the same layout)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / "zarr.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as err:
            raise DatasetError(meta_path, f"cannot be read ({err})", "rebuild the cache: vla data cache --force") \
                from None
        self.shape: tuple[int, ...] = tuple(meta.get("shape", ()))
        self.shard_frames, self._decode = self._parse(meta)
        self.fill_value = int(meta.get("fill_value") or 0)
        self._files: OrderedDict[int, int] = OrderedDict()  # shard -> fd
        self._index: dict[int, np.ndarray] = {}  # shard -> (shard_frames, 2) offsets and sizes

    def _parse(self, meta: dict) -> tuple[int, Callable[[bytes], np.ndarray]]:
        def refuse(why: str) -> DatasetError:
            return DatasetError(self.path, f"unsupported frame array layout ({why})",
                                "rebuild the cache with `vla data cache --force`")

        if meta.get("zarr_format") != 3 or meta.get("node_type") != "array" or meta.get("data_type") != "uint8":
            raise refuse("not a zarr v3 uint8 array")
        if len(self.shape) != 4:
            raise refuse(f"shape {self.shape} is not (N, H, W, C)")
        _, h, w, c = self.shape
        enc = meta.get("chunk_key_encoding", {})
        if enc.get("name") != "default" or enc.get("configuration", {}).get("separator", "/") != "/":
            raise refuse(f"chunk key encoding {enc}")
        codecs = meta.get("codecs", [])
        if len(codecs) != 1 or codecs[0].get("name") != "sharding_indexed":
            raise refuse("not sharded")
        conf = codecs[0]["configuration"]
        shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
        if list(conf["chunk_shape"]) != [1, h, w, c] or list(shard[1:]) != [h, w, c]:
            raise refuse(f"chunks {conf['chunk_shape']} in shards {shard}, expected one frame per chunk")
        index_codecs = [x["name"] for x in conf.get("index_codecs", [])]
        if conf.get("index_location", "end") != "end" or index_codecs != ["bytes", "crc32c"]:
            raise refuse(f"shard index {conf.get('index_location')} {index_codecs}")
        chain = conf["codecs"]
        names = [x["name"] for x in chain]
        up = names[:4] == ["transpose", "numcodecs.delta", "bytes", "numcodecs.shuffle"]
        if up:  # the vertical prediction written by `zarr_codecs`, and nothing else like it
            delta, shuffle = chain[1].get("configuration", {}), chain[3].get("configuration", {})
            if tuple(chain[0]["configuration"]["order"]) != VERTICAL or shuffle.get("elementsize") != c * h or \
                    {delta.get("dtype"), delta.get("astype", "u1")} - {"u1", "uint8", "|u1"}:
                raise refuse(f"filters {chain[:4]}")
            names = names[3:]
            names[0] = "bytes"
        if not names or names[0] != "bytes" or len(names) > 2:
            raise refuse(f"codecs {names}")
        decompress = _decompressor(names[1] if len(names) == 2 else None)
        if decompress is None:
            raise refuse(f"compressor {names[1]}")

        def decode(raw: bytes) -> np.ndarray:
            flat = np.frombuffer(decompress(raw), np.uint8)
            if not up:
                return np.ascontiguousarray(flat.reshape(h, w, c).transpose(2, 0, 1))
            # `flat` holds the vertical differences in (C, H, W) order; the delta ran along (W, C, H) order, so each
            # column (w, c) continues from the sum of all columns before it in that order. That carry is added to
            # each column's first difference (3*W bytes, not the whole frame), then one cumulative sum down the
            # columns undoes the delta (torch's uint8 cumsum is about twice numpy's along a middle axis).
            diff = flat.reshape(c, h, w).copy()
            totals = np.ascontiguousarray(diff.sum(axis=1, dtype=np.uint8).T).reshape(-1)  # (w, c) order, mod 256
            diff[:, 0, :] += (np.cumsum(totals, dtype=np.uint8) - totals).reshape(w, c).T
            return torch.cumsum(torch.from_numpy(diff), dim=1, dtype=torch.uint8).numpy()

        return int(shard[0]), decode

    def __len__(self) -> int:
        return int(self.shape[0])

    def _fd(self, shard: int) -> int:
        fd = self._files.get(shard)
        if fd is None:
            path = self.path / "c" / str(shard) / "0" / "0" / "0"
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return -1  # a shard with no chunk written: every frame is the fill value
            self._files[shard] = fd
            if len(self._files) > MAX_OPEN_FILES:
                os.close(self._files.popitem(last=False)[1])
        else:
            self._files.move_to_end(shard)
        return fd

    def _shard_index(self, shard: int, fd: int) -> np.ndarray:
        index = self._index.get(shard)
        if index is None:
            import google_crc32c

            nbytes = self.shard_frames * 16 + 4
            size = os.fstat(fd).st_size
            raw = os.pread(fd, nbytes, size - nbytes) if size >= nbytes else b""
            if len(raw) != nbytes or google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
                raise DatasetError(self.path / "c" / str(shard), "shard index is damaged (size or checksum)",
                                   "rebuild the cache with `vla data cache --force`")
            index = np.frombuffer(raw[:-4], "<u8").reshape(self.shard_frames, 2)
            self._index[shard] = index
        return index

    def chw(self, i: int) -> np.ndarray:
        """Frame `i` as (3, H, W) uint8, C-contiguous and writable."""
        shard, j = divmod(i, self.shard_frames)
        fd = self._fd(shard)
        offset, nbytes = self._shard_index(shard, fd)[j] if fd >= 0 else (EMPTY, EMPTY)
        if offset == EMPTY:
            _, h, w, c = self.shape
            return np.full((c, h, w), self.fill_value, np.uint8)
        raw = os.pread(fd, int(nbytes), int(offset))
        if len(raw) != nbytes:
            raise DatasetError(self.path / "c" / str(shard), f"frame {i} is cut short (truncated shard file)",
                               "rebuild the cache with `vla data cache --force`")
        frame = self._decode(raw)
        return frame if frame.flags.writeable else frame.copy()

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()

    def __getstate__(self) -> dict:  # DataLoader workers started by spawn get a copy without open files
        state = self.__dict__.copy()
        state["_files"] = OrderedDict()
        state.pop("_decode")
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__init__(self.path)  # type: ignore[misc]

    def __del__(self) -> None:
        # at interpreter shutdown module globals (os, contextlib) may be None already: no contextlib here
        try:
            self.close()
        except Exception:
            return


def _decompressor(name: str | None) -> Callable[[bytes], bytes] | None:
    import numcodecs

    if name is None:
        return lambda raw: raw
    if name == "zstd":
        return numcodecs.Zstd().decode  # type: ignore[return-value]
    if name == "blosc":
        numcodecs.blosc.use_threads = False  # one thread per DataLoader worker, no oversubscription
        return numcodecs.Blosc().decode  # type: ignore[return-value]
    return None
