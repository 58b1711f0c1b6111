"""`vla data check`: validate a LeRobot v3 dataset and list every problem with where it is and what to do.

Checks, in order (a step that cannot run because an earlier one failed is skipped, never crashes):
1. meta/info.json: present, v3, fields of the right JSON type (fps a positive whole number, ...), and a schema
   LeRobot can load (dtypes, shapes, the index columns).
2. meta/episodes and meta/tasks.parquet: readable; episodes numbered 0..E-1, each non-empty, tiling the rows
   0..N-1 in order; totals agree with info.json.
3. data/*.parquet: present and readable (a truncated file is named), columns of the declared dtype and shape;
   `index` is 0..N-1, `episode_index` and `frame_index` agree with the episode table, `task_index` names a task;
   timestamps finite, increasing within each episode, 1/fps apart (within `tolerance_s`).
4. Numeric features: no NaN or inf (reported per feature with the first place and the count).
5. Cameras (check_media.py): every episode has its video or images; video files present, readable, of the
   declared size, with a frame for every timestamp; frames decode (unless `frames=False`).
6. meta/stats.json: present, every feature covered with the right shapes, and values that agree with statistics
   recomputed from the data (tolerances in `compare_stats`). The index columns (timestamp, frame_index, ...) are
   left out: training never normalises them.

Every problem is an error or a warning. Errors are damage: a file missing or unreadable, a column of the wrong type
or shape, NaN in the data, bad timestamps, an info.json that LeRobot cannot read, statistics missing or of the
wrong shape. Warnings are statistics whose values disagree with the data: LeRobot's own writer produces them (it
averages per-episode quantiles and estimates image statistics), training still runs, and
`vla data stats DIR --write` rewrites exact ones. `vla data check` exits 1 on an error, and with `--strict` on a
warning too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vla.datasets.errors import DatasetError, reading
from vla.datasets.lerobot_io import (
    CAMERA_DTYPES,
    DEFAULT_TOLERANCE_S,
    NUMERIC_DTYPES,
    LeRobotSource,
    whole_number,
)
from vla.datasets.stats import Stats, lowdim_stats, read_stats
from vla.datasets.writer import COMMIT_FILE, uncommitted_episodes

INDEX_COLUMNS = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64",
                 "task_index": "int64"}  # fmt: skip
QUANTILE_NAMES = ("q01", "q10", "q50", "q90", "q99")


class Severity(StrEnum):
    ERROR = "error"  # the dataset is damaged: loading or training fails, or reads wrong data
    WARNING = "warning"  # usable as it is, but not exact (LeRobot's approximate statistics)


@dataclass(frozen=True)
class Problem:
    where: str  # a file, with the feature, field or episode in parentheses
    what: str
    fix: str = ""
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.what}" + (f" -> fix: {self.fix}" if self.fix else "")

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    @classmethod
    def of(cls, err: DatasetError) -> Problem:
        fix = err.fix if "vla data check" not in err.fix else "restore the file or re-record the affected episodes"
        return cls(err.where, err.what, fix)


def summary(problems: list[Problem]) -> str:
    """The counts, e.g. "2 errors, 1 warning"."""
    errors = sum(p.is_error for p in problems)
    return f"{_plural(errors, 'error')}, {_plural(len(problems) - errors, 'warning')}"


def exit_code(problems: list[Problem], strict: bool = False) -> int:
    """1 when there is an error (or, with `strict`, a warning), else 0."""
    return int(any(p.is_error or strict for p in problems))


def restat(root: Path) -> str:
    return f"rewrite exact statistics with `vla data stats {root} --write`"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def check_dataset(root: str | Path, frames: bool = True, stats: bool = True,
                  tolerance_s: float = DEFAULT_TOLERANCE_S, progress: bool = False) -> list[Problem]:
    """Every problem found in the dataset at `root` (empty when it is valid)."""
    from vla.datasets.check_media import check_cameras

    root = Path(root)
    problems = check_info(root)
    if problems:
        return problems  # LeRobotSource (and LeRobot) would stop at the first bad field with a bare exception
    if lost := uncommitted_episodes(root):
        return [Problem(str(root / COMMIT_FILE), f"a recording was killed with {_plural(lost, 'episode')} saved after "
                        "its last commit; their files may be unreadable", "run the recording again with --resume: it "
                        "rolls the dataset back to that commit and appends")]  # fmt: skip
    try:
        source = LeRobotSource(root)
    except DatasetError as err:
        return [Problem.of(err)]
    problems += check_schema(source)
    if any(p.what.startswith("schema:") for p in problems):
        return problems  # the rest would only repeat it
    problems += check_episodes(source)
    rows_ok = not problems
    columns, more = read_data(source)
    problems += more
    if columns is not None:
        problems += check_rows(source, columns, tolerance_s, tables_ok=rows_ok)
        problems += check_finite(source, columns)
    histograms = check_cameras(source, columns, problems, frames, tolerance_s, progress)
    if stats and columns is not None:
        problems += check_stats(source, columns, histograms)
    return problems


# --- 1. info.json and schema --------------------------------------------------------------------------------------


def _feature_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(ft, dict) for ft in value.values())


# field: (valid, what it must be); a missing field is reported by LeRobotSource
INFO_FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "fps": (whole_number(1), "a positive whole number of frames per second, e.g. 30"),
    "total_episodes": (whole_number(0), "a whole number >= 0"),
    "total_frames": (whole_number(0), "a whole number >= 0"),
    "features": (_feature_map, "an object mapping each feature name to an object with its dtype and shape"),
    "data_path": (lambda v: isinstance(v, str), 'a path template such as '
                  '"data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"'),
    "video_path": (lambda v: v is None or isinstance(v, str), "a path template or null"),
}
JSON_TYPES = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "an array",
              dict: "an object", type(None): "null"}  # fmt: skip


def check_info(root: Path) -> list[Problem]:
    """Fields of meta/info.json whose JSON type is wrong, one problem each naming the field and what it must be."""
    path = root / "meta" / "info.json"
    if not path.is_file():
        return []  # LeRobotSource says that this is not a dataset
    try:
        with reading(path, fix="restore meta/info.json"):
            info = json.loads(path.read_text())
    except DatasetError as err:
        return [Problem.of(err)]
    if not isinstance(info, dict):
        return [Problem(str(path), f"is {JSON_TYPES.get(type(info), type(info).__name__)}, not a JSON object",
                        "restore meta/info.json")]
    problems = []
    for name, (valid, expected) in INFO_FIELDS.items():
        if name in info and not valid(info[name]):
            value = info[name]
            shown = json.dumps(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            kind = "" if value is None else f" ({JSON_TYPES.get(type(value), type(value).__name__)})"
            problems.append(Problem(f"{path} ({name})", f"{name} is {shown}{kind}, expected {expected}",
                                    f"correct {name} in meta/info.json"))
    return problems


def check_schema(source: LeRobotSource) -> list[Problem]:
    info = source.root / "meta" / "info.json"
    problems = []
    for key, ft in source.features.items():
        dtype, shape = ft.get("dtype"), ft.get("shape")
        if dtype not in (*NUMERIC_DTYPES, *CAMERA_DTYPES, "string"):
            problems.append(Problem(str(info), f"schema: feature {key!r} has unknown dtype {dtype!r}",
                                    f"use one of {', '.join((*NUMERIC_DTYPES, *CAMERA_DTYPES, 'string'))}"))
        if not isinstance(shape, list | tuple) or not shape or not all(isinstance(s, int) and s > 0 for s in shape):
            problems.append(Problem(str(info), f"schema: feature {key!r} has shape {shape!r}",
                                    "shapes are non-empty lists of positive integers"))
        elif dtype in CAMERA_DTYPES and (len(shape) != 3 or shape[2] != 3):
            problems.append(Problem(str(info), f"schema: camera {key!r} has shape {list(shape)}",
                                    "cameras are [height, width, 3]"))
        if "/" in key:
            problems.append(Problem(str(info), f"schema: feature name {key!r} contains '/'", "rename the feature"))
    for key, dtype in INDEX_COLUMNS.items():
        have = source.features.get(key, {}).get("dtype")
        if have != dtype:
            problems.append(Problem(str(info), f"schema: feature {key!r} is {have or 'missing'}, LeRobot needs "
                                    f"{dtype}", "the dataset was not written by LeRobot v3; re-convert it"))
    if source.video_keys and not source.info.get("video_path"):
        problems.append(Problem(str(info), "schema: video features but no video_path", "restore info.json"))
    return problems


# --- 2. episodes and tasks ----------------------------------------------------------------------------------------


def check_episodes(source: LeRobotSource) -> list[Problem]:
    where = str(source.root / "meta" / "episodes")
    problems = []
    indices = [ep.index for ep in source.episodes]
    if indices != list(range(len(indices))):
        problems.append(Problem(where, f"episode indices are not 0..{len(indices) - 1} (got {_ranges(indices)})",
                                "episodes must be numbered without gaps; re-aggregate the dataset"))
    expected = 0
    for ep in source.episodes:
        if ep.length <= 0:
            problems.append(Problem(f"{where} (episode {ep.index})", f"episode is empty (rows {ep.start}..{ep.stop})",
                                    "remove the episode with lerobot's dataset tools or re-record it"))
        elif ep.start != expected:
            problems.append(Problem(f"{where} (episode {ep.index})", f"starts at row {ep.start}, the previous episode "
                                    f"ends at {expected}", "episode boundaries must tile the rows in order"))
        expected = max(expected, ep.stop)
    info = source.info
    if info.get("total_episodes") != len(source.episodes):
        problems.append(Problem(str(source.root / "meta" / "info.json"), f"total_episodes is "
                                f"{info.get('total_episodes')}, meta/episodes has {len(source.episodes)}",
                                "fix total_episodes (an interrupted recording leaves this)"))
    if info.get("total_frames") != expected:
        problems.append(Problem(str(source.root / "meta" / "info.json"), f"total_frames is {info.get('total_frames')}"
                                f", the episodes cover {expected} rows", "fix total_frames"))
    tasks = source.root / "meta" / "tasks.parquet"
    try:
        pq.read_table(tasks)
    except Exception as err:
        problems.append(Problem(str(tasks), f"cannot be read ({type(err).__name__})", "restore it"))
    return problems


def _ranges(values: list[int]) -> str:
    return ", ".join(str(v) for v in values[:8]) + (" ..." if len(values) > 8 else "")


# --- 3. data files ------------------------------------------------------------------------------------------------


def expected_arrow_type(ft: dict) -> pa.DataType | None:
    dtype = ft["dtype"]
    if dtype in CAMERA_DTYPES:
        return None
    value = pa.string() if dtype == "string" else pa.from_numpy_dtype(np.dtype(dtype))
    shape = list(ft["shape"])
    if shape == [1]:
        return value
    for n in reversed(shape):
        value = pa.list_(value, n)
    return value


def read_data(source: LeRobotSource) -> tuple[dict[str, np.ndarray] | None, list[Problem]]:
    """All numeric columns, or None when a data file is missing, unreadable or of the wrong schema."""
    problems = []
    keys = source.lowdim_keys()
    for rel in source.data_files():
        path = source.root / rel
        if not path.is_file():
            eps = [ep.index for ep in source.episodes if ep.data_path == rel]
            problems.append(Problem(str(path), f"data file is missing (episodes {_ranges(eps)})",
                                    "restore it or remove those episodes"))
            continue
        try:
            schema = pq.read_schema(path)
            pq.read_metadata(path)
        except Exception as err:
            problems.append(Problem(str(path), f"cannot be read ({type(err).__name__}: {str(err)[:80]}); truncated "
                                    "or damaged", "restore the file or re-record its episodes"))
            continue
        for key, ft in source.features.items():
            want = expected_arrow_type(ft)
            if ft["dtype"] == "video":
                continue
            if key not in schema.names:
                problems.append(Problem(str(path), f"column {key!r} is missing", "the file does not match info.json"))
            elif ft["dtype"] == "image":
                if not pa.types.is_struct(schema.field(key).type):
                    problems.append(Problem(str(path), f"column {key!r} is {schema.field(key).type}, images are "
                                            "stored as struct<bytes, path>", "re-write the images"))
            elif not _same_type(schema.field(key).type, want):
                problems.append(Problem(str(path), f"column {key!r} is {schema.field(key).type}, info.json declares "
                                        f"{ft['dtype']} {list(ft['shape'])}",
                                        "convert the column or fix the feature's dtype and shape in info.json"))
    if problems:
        return None, problems
    try:
        return source.read_lowdim(keys), []
    except DatasetError as err:
        return None, [Problem.of(err)]


def _same_type(have: pa.DataType, want: pa.DataType | None) -> bool:
    if want is None or isinstance(have, pa.ExtensionType):  # datasets' Array2D..5D: checked when read
        return True
    while pa.types.is_list(have) or pa.types.is_large_list(have) or pa.types.is_fixed_size_list(have):
        if not (pa.types.is_list(want) or pa.types.is_fixed_size_list(want)):
            return False
        if pa.types.is_fixed_size_list(have) and have.list_size != want.list_size:  # type: ignore[attr-defined]
            return False
        have, want = have.value_type, want.value_type  # type: ignore[attr-defined]
    return have == want


def check_rows(source: LeRobotSource, columns: dict[str, np.ndarray], tolerance_s: float,
               tables_ok: bool) -> list[Problem]:
    where = str(source.root / "data")
    index = columns["index"].reshape(-1)
    n = len(index)
    problems = []
    if not np.array_equal(index, np.arange(n)):
        bad = int(np.flatnonzero(index != np.arange(n))[0]) if len(index) else 0
        problems.append(Problem(where, f"'index' is not 0..{n - 1} in file order (row {bad} holds {index[bad]})",
                                "rows must be stored in index order; re-write the data files"))
    if not tables_ok or problems:
        return problems  # episode spans are unreliable: the boundary checks would only echo that
    episode, frame = columns["episode_index"].reshape(-1), columns["frame_index"].reshape(-1)
    ts = columns["timestamp"].reshape(-1).astype(np.float64)
    tasks = len(pq.read_table(source.root / "meta" / "tasks.parquet"))
    bad_tasks = np.flatnonzero((columns["task_index"] < 0) | (columns["task_index"] >= tasks))
    if len(bad_tasks):
        problems.append(Problem(where, f"task_index out of range 0..{tasks - 1} at {source.locate(int(bad_tasks[0]))}"
                                f" ({len(bad_tasks)} rows)", "fix meta/tasks.parquet or the task_index column"))
    step = 1.0 / source.fps
    for ep in source.episodes:
        rows = slice(ep.start, min(ep.stop, n))
        place = f"{where} (episode {ep.index})"
        wrong = np.flatnonzero(episode[rows] != ep.index)
        if len(wrong):
            problems.append(Problem(place, f"frame {wrong[0]} has episode_index {episode[rows][wrong[0]]} "
                                    f"({len(wrong)} rows disagree with the episode table)",
                                    "episode boundaries in meta/episodes do not match the data"))
        if not np.array_equal(frame[rows], np.arange(len(frame[rows]))):
            first = int(np.flatnonzero(frame[rows] != np.arange(len(frame[rows])))[0])
            problems.append(Problem(place, f"frame_index is not 0..{ep.length - 1} (frame {first} holds "
                                    f"{frame[rows][first]})", "re-number frame_index"))
        t = ts[rows]
        if not np.isfinite(t).all():
            first = int(np.flatnonzero(~np.isfinite(t))[0])
            problems.append(Problem(place, f"timestamp is NaN or inf at frame {first}",
                                    "re-write timestamps as frame_index / fps"))
            continue
        gaps = np.diff(t)
        if (gaps <= 0).any():
            k = int(np.flatnonzero(gaps <= 0)[0])
            problems.append(Problem(place, f"timestamps are not increasing: frame {k + 1} at {t[k + 1]:.4f} s after "
                                    f"{t[k]:.4f} s", "re-write timestamps as frame_index / fps"))
        elif (np.abs(gaps - step) > tolerance_s).any():
            k = int(np.flatnonzero(np.abs(gaps - step) > tolerance_s)[0])
            problems.append(Problem(place, f"timestamps do not match fps {source.fps}: frames {k} and {k + 1} are "
                                    f"{gaps[k] * 1e3:.2f} ms apart, not {step * 1e3:.2f} ms "
                                    f"({int((np.abs(gaps - step) > tolerance_s).sum())} such steps)",
                                    "fix fps in info.json or re-time the episode (dropped frames?)"))
    return problems


# --- 4. numbers ---------------------------------------------------------------------------------------------------


def check_finite(source: LeRobotSource, columns: dict[str, np.ndarray]) -> list[Problem]:
    problems = []
    for key, values in columns.items():
        if key == "timestamp" or not np.issubdtype(values.dtype, np.floating):
            continue
        bad_rows = ~np.isfinite(values.reshape(len(values), -1)).all(1)
        if bad_rows.any():
            first = int(np.flatnonzero(bad_rows)[0])
            kinds = "NaN" if np.isnan(values).any() else "inf"
            problems.append(Problem(f"{source.root / 'data'} ({key})", f"{kinds} values in {int(bad_rows.sum())} "
                                    f"frames, first at {source.locate(first)}",
                                    "fix the recording or drop the affected episodes"))
    return problems


# --- 6. statistics ------------------------------------------------------------------------------------------------


def compare_stats(stored: Stats, computed: Stats, cameras: list[str]) -> list[tuple[str, str, Severity]]:
    """(feature, what is wrong, severity) for each feature whose stored statistics do not fit the recomputed ones.

    A feature or statistic missing, or of the wrong shape, is an error: LeRobot's normalisation fails on it or
    leaves the feature unnormalised. Values that disagree are a warning (what LeRobot writes itself), with the
    reason in the message. Tolerances: numeric features min/max and count exactly (to float rounding), mean within
    1e-4 of the spread, std within 0.1 %, quantiles within 2 % of the range (histogram-based estimates pass,
    averaged per-episode ones do not). Cameras (values in [0, 1]): mean and std within 0.02 + 10 %; min, max and
    quantiles are only checked for shape, since LeRobot computes them on the frames before video encoding and the
    decoded frames differ slightly."""
    out = []
    for key, want in computed.items():
        have = stored.get(key)
        if have is None:
            out.append((key, "no statistics (training cannot normalise this feature)", Severity.ERROR))
            continue
        spread = float(np.max(want["max"] - want["min"]))
        broken: list[str] = []
        differ: dict[str, str] = {}  # statistic: how its value disagrees
        for name, value in want.items():
            if name not in have:
                broken.append(f"'{name}' is missing")
                continue
            got = np.asarray(have[name], np.float64)
            if got.shape != value.shape:
                broken.append(f"'{name}' has shape {got.shape}, expected {value.shape}")
                continue
            if key in cameras and name not in ("mean", "std"):
                continue
            diff = np.abs(got - value)
            tol = _tolerance(name, value, spread, key in cameras)
            if not (diff <= tol).all():
                k = int(np.argmax(diff - tol))
                differ[name] = (f"'{name}' is {got.ravel()[k]:.6g} where the data gives {value.ravel()[k]:.6g}"
                                + (f" at dimension {k}" if value.size > 1 else ""))
        if broken:
            out.append((key, _first_and_count(broken), Severity.ERROR))
        if differ:
            first = next(iter(differ.values()))
            out.append((key, f"{', '.join(differ)} disagree{'s' if len(differ) == 1 else ''} with the data "
                        f"({first}): {_why(list(differ), key in cameras)}", Severity.WARNING))
    return out


def _tolerance(name: str, value: np.ndarray, spread: float, camera: bool) -> np.ndarray | float:
    if camera:
        return 0.02 + 0.1 * np.abs(value)
    if name == "count":
        return 0.0
    if name in ("min", "max"):
        return 1e-6 * (1 + np.abs(value))
    if name == "mean":
        return 1e-4 * (spread + 1e-6)
    if name == "std":
        return 1e-3 * np.abs(value) + 1e-7
    return 0.02 * spread + 1e-6


def _first_and_count(found: list[str]) -> str:
    return found[0] + (f"; {len(found) - 1} more statistics are wrong" if len(found) > 1 else "")


def _why(names: list[str], camera: bool) -> str:
    """The likely cause of statistics that disagree with the data."""
    if camera:
        return "LeRobot estimates image statistics from sampled frames and averages them over episodes"
    if all(name in QUANTILE_NAMES for name in names):
        return "LeRobot averages per-episode quantiles, which are not the dataset's quantiles"
    return "the statistics do not describe this data (stale after the data changed?)"


def check_stats(source: LeRobotSource, columns: dict[str, np.ndarray], histograms: dict) -> list[Problem]:
    path = source.root / "meta" / "stats.json"
    fix = restat(source.root)
    if not path.is_file():
        return [Problem(str(path), "statistics file is missing (training cannot normalise)", fix)]
    try:
        stored = read_stats(path)
    except DatasetError as err:
        return [Problem(err.where, err.what, fix)]
    computed: Stats = {k: lowdim_stats(v) for k, v in columns.items()  # NaN and inf are reported by check_finite
                       if len(v) and k not in INDEX_COLUMNS and np.isfinite(v).all()}
    computed.update({cam: hist.stats() for cam, hist in histograms.items()})
    return [Problem(f"{path} ({key})", what, fix, severity)
            for key, what, severity in compare_stats(stored, computed, source.cameras)]
