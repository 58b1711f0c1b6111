"""Direct, streaming reads of a LeRobot v3 dataset on disk: metadata, low-dimensional columns, and camera frames.

`LeRobotDataset` reads one sample at a time; the frame cache, the statistics and the validator instead read every
frame once, in order. `LeRobotSource` does that with pyarrow and PyAV and never holds more than one block of
frames in memory.

What is unusual:
- Video frames are the ones LeRobot's PyAV backend returns, pixel for pixel: each video file is decoded once,
  sequentially, with the same conversion (`frame.to_rgb().to_ndarray()`), and each dataset frame takes the decoded
  frame nearest to `from_timestamp + timestamp` (earlier frame on a tie), within `tolerance_s`, as
  `decode_video_frames_torchvision` does per query.
- Image-storage frames are the PNG bytes inside the data parquet files, decoded with PIL as `datasets` does.
- Every file access converts library errors into `DatasetError` naming the file (see `errors.py`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vla.datasets.errors import DatasetError, reading

CAMERA_DTYPES = ("video", "image")
NUMERIC_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                  "uint64", "bool")  # fmt: skip
DEFAULT_TOLERANCE_S = 1e-4  # LeRobotDataset's default
FRAME_BLOCK = 256  # frames per block yielded by `iter_frames`


@dataclass(frozen=True)
class VideoRef:
    """Where one episode of one camera lives: a video file and the time span inside it."""

    path: str  # relative to the dataset root
    from_timestamp: float
    to_timestamp: float


@dataclass
class Episode:
    index: int
    start: int  # dataset_from_index
    stop: int  # dataset_to_index (exclusive)
    data_path: str  # relative to the dataset root
    videos: dict[str, VideoRef | None] = field(default_factory=dict)  # None: the episode row names no file

    @property
    def length(self) -> int:
        return self.stop - self.start


def whole_number(low: int) -> Callable[[object], bool]:
    """A validator of JSON numbers: a whole number (1 or 1.0, never true/false) of at least `low`."""

    def valid(value: object) -> bool:
        return (isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer()
                and value >= low)

    return valid


class LeRobotSource:
    """A LeRobot v3 dataset directory, read without `LeRobotDataset`. Raises `DatasetError` on bad input."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise DatasetError(self.root, "not a LeRobot dataset (meta/info.json is missing)",
                               "pass the directory that contains meta/, data/ and videos/")
        with reading(info_path):
            self.info: dict = json.loads(info_path.read_text())
        version = str(self.info.get("codebase_version", "?"))
        if not version.startswith("v3"):
            raise DatasetError(info_path, f"codebase_version is {version}; these tools read LeRobot v3 datasets",
                               "convert it with lerobot/datasets/v30/convert_dataset_v21_to_v30.py")
        for key in ("features", "fps", "data_path"):
            if key not in self.info:
                raise DatasetError(info_path, f"has no '{key}' entry", "the file is damaged; restore it")
        self.features: dict[str, dict] = self.info["features"]
        fps = self.info["fps"]
        if not whole_number(1)(fps):
            raise DatasetError(info_path, f"fps is {fps!r}; it must be a positive whole number of frames per second",
                               "the file is damaged; restore it or set the recording's frame rate")
        self.fps = int(fps)
        self.cameras = [k for k, ft in self.features.items() if ft.get("dtype") in CAMERA_DTYPES]
        self.video_keys = [k for k in self.cameras if self.features[k]["dtype"] == "video"]
        self.episodes = self._read_episodes()

    # --- metadata ---------------------------------------------------------------------------------------------

    def _read_episodes(self) -> list[Episode]:
        files = sorted((self.root / "meta" / "episodes").glob("*/*.parquet"))
        if not files:
            raise DatasetError(self.root / "meta" / "episodes", "no episode metadata files",
                               "the dataset was not finalized; it cannot be read")
        rows: list[dict] = []
        for path in files:
            with reading(path):
                names = pq.read_schema(path).names
                rows += pq.read_table(path, columns=[n for n in names if not n.startswith("stats/")]).to_pylist()
        episodes = []
        for row in sorted(rows, key=lambda r: r.get("episode_index", -1)):
            where = f"{self.root / 'meta' / 'episodes'} (episode {row.get('episode_index')})"
            try:
                data_path = self.info["data_path"].format(chunk_index=row["data/chunk_index"],
                                                          file_index=row["data/file_index"])
                ep = Episode(int(row["episode_index"]), int(row["dataset_from_index"]),
                             int(row["dataset_to_index"]), data_path)
            except (KeyError, TypeError, ValueError) as err:
                raise DatasetError(where, f"episode row is incomplete ({err!r} missing or null)",
                                   "the metadata is damaged; re-record or restore it") from None
            for key in self.video_keys:
                chunk, file = row.get(f"videos/{key}/chunk_index"), row.get(f"videos/{key}/file_index")
                start, stop = row.get(f"videos/{key}/from_timestamp"), row.get(f"videos/{key}/to_timestamp")
                if None in (chunk, file, start, stop) or self.info.get("video_path") is None:
                    ep.videos[key] = None
                else:
                    rel = self.info["video_path"].format(video_key=key, chunk_index=chunk, file_index=file)
                    ep.videos[key] = VideoRef(rel, float(start), float(stop))  # type: ignore[arg-type]
            episodes.append(ep)
        return episodes

    @property
    def total_frames(self) -> int:
        return int(self.info.get("total_frames", sum(ep.length for ep in self.episodes)))

    def data_files(self) -> list[str]:
        """Relative data parquet paths in episode order, each once."""
        return list(dict.fromkeys(ep.data_path for ep in self.episodes))

    def lowdim_keys(self) -> list[str]:
        """Features stored as numbers in the data parquet files (everything but cameras and strings)."""
        return [k for k, ft in self.features.items() if ft.get("dtype") in NUMERIC_DTYPES]

    def episode_of(self, index: int) -> Episode:
        starts = np.array([ep.start for ep in self.episodes])
        return self.episodes[max(0, int(np.searchsorted(starts, index, side="right")) - 1)]

    def locate(self, index: int) -> str:
        """Human-readable place of absolute frame `index`: "episode E frame F"."""
        ep = self.episode_of(index)
        return f"episode {ep.index} frame {index - ep.start}"

    def task_names(self) -> list[str]:
        """The instructions of meta/tasks.parquet, in `task_index` order."""
        path = self.root / "meta" / "tasks.parquet"
        with reading(path):
            table = pq.read_table(path).to_pandas()
        return [str(t) for t in table.sort_values("task_index").index]

    # --- low-dimensional data ---------------------------------------------------------------------------------

    def read_lowdim(self, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """Whole columns, rows in file order (the order of `index` in a well-formed dataset): {key: (N, *shape)}."""
        keys = self.lowdim_keys() if keys is None else keys
        parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        for rel in self.data_files():
            path = self.root / rel
            with reading(path):
                schema = pq.read_schema(path)
            missing = [k for k in keys if k not in schema.names]
            if missing:
                raise DatasetError(path, f"has no column {missing[0]!r} (declared in meta/info.json)",
                                   "the data file does not match the dataset's features")
            with reading(path):
                table = pq.read_table(path, columns=keys)
            for key in keys:
                parts[key].append(column_to_numpy(table.column(key), f"{path} column {key!r}"))
        return {k: (np.concatenate(v) if v else np.zeros((0,))) for k, v in parts.items()}

    # --- frames -----------------------------------------------------------------------------------------------

    def iter_frames(self, camera: str, timestamps: np.ndarray | None = None,
                    tolerance_s: float = DEFAULT_TOLERANCE_S) -> Iterator[np.ndarray]:
        """Every frame of `camera` in dataset order, as uint8 blocks (n, H, W, 3) of at most `FRAME_BLOCK` frames.

        `timestamps` (N,) is the data's `timestamp` column (read here when not given); video only."""
        if camera not in self.cameras:
            raise DatasetError(self.root, f"has no camera {camera!r}", f"cameras are {self.cameras}")
        if self.features[camera]["dtype"] == "image":
            yield from self._iter_image_frames(camera)
            return
        if timestamps is None:
            timestamps = self.read_lowdim(["timestamp"])["timestamp"].astype(np.float64)
        block: list[np.ndarray] = []
        for run in self._video_runs(camera):
            ref = run[0].videos[camera]
            assert ref is not None
            queries = np.concatenate([ep.videos[camera].from_timestamp  # type: ignore[union-attr]
                                      + timestamps[ep.start: ep.stop].astype(np.float64) for ep in run])
            starts = np.cumsum([0] + [ep.length for ep in run])

            def where(i: int, run: list[Episode] = run, starts: np.ndarray = starts) -> str:
                k = int(np.searchsorted(starts, i, side="right")) - 1
                return f"{camera}, episode {run[k].index} frame {i - starts[k]}"

            for frame in decode_nearest(self.root / ref.path, queries, tolerance_s, where):
                block.append(frame)
                if len(block) == FRAME_BLOCK:
                    yield np.stack(block)
                    block = []
        if block:
            yield np.stack(block)

    def _video_runs(self, camera: str) -> list[list[Episode]]:
        """Consecutive episodes that sit in order in the same video file: each run is decoded in one pass."""
        runs: list[list[Episode]] = []
        for ep in self.episodes:
            ref = ep.videos.get(camera)
            if ref is None:
                raise DatasetError(self.root / "meta" / "episodes", f"episode {ep.index} has no video for camera "
                                   f"{camera!r}", "re-record the episode or remove it from the dataset")
            last = runs[-1][-1].videos[camera] if runs else None
            if last is not None and last.path == ref.path and ref.from_timestamp >= last.to_timestamp - 1e-9:
                runs[-1].append(ep)
            else:
                runs.append([ep])
        return runs

    def _iter_image_frames(self, camera: str) -> Iterator[np.ndarray]:
        shape = tuple(self.features[camera]["shape"])
        offset = 0
        for rel in self.data_files():
            path = self.root / rel
            with reading(path):
                batches = pq.ParquetFile(path).iter_batches(columns=[camera], batch_size=FRAME_BLOCK)
                for batch in batches:
                    cells = batch.column(0).to_pylist()
                    frames = [self._decode_png(cell, camera, offset + i, shape) for i, cell in enumerate(cells)]
                    offset += len(cells)
                    yield np.stack(frames)

    def _decode_png(self, cell: dict | None, camera: str, index: int, shape: tuple) -> np.ndarray:
        from PIL import Image

        where = f"{self.root} ({camera}, {self.locate(index)})"
        if cell is None or (cell.get("bytes") is None and cell.get("path") is None):
            raise DatasetError(where, "no image stored for this frame", "re-record the episode or drop it")
        source = io.BytesIO(cell["bytes"]) if cell.get("bytes") is not None else self.root / cell["path"]
        with reading(where):
            image = Image.open(source)
            image.load()
            array = np.asarray(image)
        if array.shape != shape or array.dtype != np.uint8:
            raise DatasetError(where, f"image is {array.dtype} {array.shape} (PIL mode {image.mode}); meta/info.json "
                               f"declares uint8 {shape}", "re-encode the images as RGB of the declared size")
        return array


def column_to_numpy(column: pa.ChunkedArray, where: str) -> np.ndarray:
    """An arrow column of scalars, fixed-size lists or nested lists as (N, *shape), keeping its dtype."""
    if column.null_count:
        raise DatasetError(where, f"{column.null_count} null values", "the file is damaged; re-record it")
    array = column.combine_chunks()
    shape: list[int] = []
    while pa.types.is_fixed_size_list(array.type) or pa.types.is_list(array.type) or \
            pa.types.is_large_list(array.type):
        if pa.types.is_fixed_size_list(array.type):
            shape.append(array.type.list_size)
        else:
            lengths = np.unique(array.value_lengths().to_numpy(zero_copy_only=False))
            if len(lengths) > 1:
                raise DatasetError(where, f"rows have different lengths {lengths.tolist()}",
                                   "every row of a feature must have the declared shape")
            shape.append(int(lengths[0]) if len(lengths) else 0)
        array = array.flatten()
    if isinstance(array, pa.ExtensionArray):  # datasets' Array2D etc. store nested lists in an extension type
        return np.asarray(column.to_pylist())
    values = array.to_numpy(zero_copy_only=False)
    return values.reshape(len(column), *shape)


def decode_nearest(path: Path, queries: np.ndarray, tolerance_s: float,
                   where: Callable[[int], str]) -> Iterator[np.ndarray]:
    """For each query time (s, non-decreasing), the decoded frame nearest to it, as (H, W, 3) uint8."""
    import av

    if not path.is_file():
        raise DatasetError(path, "video file is missing", "restore it or re-record the dataset")
    with reading(path):
        container = av.open(str(path))
    try:
        stream = container.streams.video[0]
        if len(queries) and queries[0] > 1.0 and stream.time_base is not None:
            with reading(path):
                container.seek(round(queries[0] / float(stream.time_base)), stream=stream, backward=True)
        frames = _timed_frames(container, stream, path)
        prev: list | None = None  # [pts, frame, ndarray or None]
        cur = next(frames, None)
        for i, q in enumerate(queries):
            while cur is not None and cur[0] <= q:
                prev, cur = cur, next(frames, None)
            candidates = [c for c in (prev, cur) if c is not None]
            if not candidates:
                raise DatasetError(path, f"contains no decodable frames (needed for {where(i)})",
                                   "the video is empty or truncated; re-encode or re-record it")
            best = min(candidates, key=lambda c: abs(c[0] - q))  # min keeps the first (earlier) on a tie
            if not abs(best[0] - q) < tolerance_s:
                raise DatasetError(path, f"no frame within {tolerance_s * 1e3:.2f} ms of t={q:.4f} s for {where(i)}"
                                   f" (nearest frame at {best[0]:.4f} s)",
                                   "the video is shorter than the episode or its timestamps do not match fps; run "
                                   "`vla data check` on the dataset")
            if best[2] is None:
                best[2] = best[1].to_rgb().to_ndarray()
            yield best[2]
    finally:
        container.close()


def _timed_frames(container, stream, path: Path) -> Iterator[list]:  # type: ignore[no-untyped-def]
    with reading(path):
        for frame in container.decode(stream):
            if frame.pts is not None:
                yield [float(frame.pts * frame.time_base), frame, None]


def file_stamp(path: Path) -> list[int]:
    """[size, mtime in ns]: free to read; any ordinary write changes it."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def file_fingerprint(path: Path) -> str:
    """Size plus a hash of the whole content (about 1 GB/s): what a file holds, whatever its time stamps say."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return f"{path.stat().st_size}:{digest.hexdigest()}"


def dataset_files(root: Path) -> list[Path]:
    """The files that make up a dataset's content (meta/stats.json excluded: statistics do not change samples)."""
    files = [root / "meta" / "info.json", root / "meta" / "tasks.parquet"]
    files += sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    files += sorted((root / "data").glob("*/*.parquet"))
    files += sorted((root / "videos").glob("*/*/*.mp4"))
    return [f for f in files if f.is_file()]
