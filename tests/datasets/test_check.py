"""`vla data check` finds each kind of damage it claims to, says where, tells errors from warnings, and no tool
crashes on damaged input.

Every corruption below is applied to a copy of a valid dataset (statistics rewritten by `vla data stats --write`,
so the clean copy has no problem at all); the check must report it with the expected location, message and
severity, exit 1 on an error (and on a warning only with --strict), and `vla data cache` / `vla data stats` must
either succeed or stop with one `error:` line, never a traceback. A dataset as LeRobot writes it has approximate
statistics: warnings, exit 0.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vla.datasets.check import Severity, check_dataset
from vla.datasets.cli import main

DATA0, DATA1, DATA2 = (f"data/chunk-000/file-00{i}.parquet" for i in range(3))
EPISODES = "meta/episodes/chunk-000/file-000.parquet"
FRONT0 = "videos/observation.images.front/chunk-000/file-000.mp4"
WRIST2 = "videos/observation.images.wrist/chunk-000/file-002.mp4"


@pytest.fixture(scope="module")
def clean(video_ds: Path, image_ds: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Copies of both datasets with recomputed statistics."""
    out = {}
    for name, src in (("video", video_ds), ("image", image_ds)):
        dst = tmp_path_factory.mktemp(f"clean-{name}") / "ds"
        shutil.copytree(src, dst)
        assert main(["data", "stats", str(dst), "--write"]) == 0
        out[name] = dst
    return out


def edit_column(path: Path, name: str, change: Callable[[list], list]) -> None:
    """Rewrite one column of a parquet file through Python values, keeping its type."""
    table = pq.read_table(path)
    i = table.schema.get_field_index(name)
    values = change(table.column(name).to_pylist())
    pq.write_table(table.set_column(i, table.schema.field(i), pa.array(values, type=table.schema.field(i).type)), path)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def set_nan(root: Path, column: str = "action") -> None:
    def change(rows: list) -> list:
        rows[6 + 1][2] = float("nan")  # episode 1, frame 1
        return rows

    edit_column(root / DATA0, column, change)


def swap_timestamps(root: Path) -> None:
    edit_column(root / DATA0, "timestamp", lambda t: [*t[:8], t[9], t[8], *t[10:]])  # episode 1, frames 2 and 3


def change_fps(root: Path) -> None:
    info = json.loads((root / "meta" / "info.json").read_text())
    info["fps"] = 15
    (root / "meta" / "info.json").write_text(json.dumps(info))


def shift_boundary(root: Path) -> None:
    edit_column(root / EPISODES, "dataset_to_index", lambda v: [v[0] + 2, *v[1:]])
    edit_column(root / EPISODES, "dataset_from_index", lambda v: [v[0], v[1] + 2, *v[2:]])


def empty_episode(root: Path) -> None:
    edit_column(root / EPISODES, "dataset_to_index", lambda v: [v[0], v[1], v[2] - 4])  # episode 2: 15..15


def action_as_float64(root: Path) -> None:
    table = pq.read_table(root / DATA1)
    i = table.schema.get_field_index("action")
    column = table.column("action").cast(pa.list_(pa.float64(), 3))
    pq.write_table(table.set_column(i, "action", column), root / DATA1)


def drop_wrist_video_of_episode_4(root: Path) -> None:
    for episodes in sorted((root / "meta" / "episodes").glob("*/*.parquet")):
        table = pq.read_table(episodes)
        if table.column("episode_index").to_pylist() == [4]:
            edit_column(episodes, "videos/observation.images.wrist/file_index", lambda v: [None])


def wrong_stats(root: Path) -> None:
    stats = json.loads((root / "meta" / "stats.json").read_text())
    stats["action"]["mean"][1] += 0.5
    (root / "meta" / "stats.json").write_text(json.dumps(stats))


ERROR, WARNING = Severity.ERROR, Severity.WARNING
CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # name: (damage, where the problem must point, what it must say); an error unless WARNINGS names it
    "truncated video": (lambda r: truncate(r / FRONT0), FRONT0, "truncated"),
    "missing video": (lambda r: (r / WRIST2).unlink(), WRIST2, "video file is missing"),
    "truncated parquet": (lambda r: truncate(r / DATA0), DATA0, "cannot be read"),
    "missing parquet": (lambda r: (r / DATA2).unlink(), DATA2, "data file is missing"),
    "NaN in action": (set_nan, "data (action)", "NaN values in 1 frames, first at episode 1 frame 1"),
    "timestamps not increasing": (swap_timestamps, "episode 1", "timestamps are not increasing: frame 3"),
    "timestamps do not match fps": (change_fps, "episode 0", "timestamps do not match fps 15"),
    "episode boundary": (shift_boundary, "episode 0", "has episode_index 1"),
    "empty episode": (empty_episode, "episode 2", "episode is empty"),
    "wrong dtype": (action_as_float64, DATA1, "double>[3], info.json declares float32 [3]"),
    "camera missing in one episode": (drop_wrist_video_of_episode_4, "observation.images.wrist",
                                      "episodes 4 have no video for this camera"),
    "statistics disagree": (wrong_stats, "stats.json (action)", "'mean' is"),
    "statistics of the wrong shape": (lambda r: set_stat(r, "action", "std", [1.0, 1.0]), "stats.json (action)",
                                      "'std' has shape (2,), expected (3,)"),
    "statistics missing": (lambda r: (r / "meta" / "stats.json").unlink(), "stats.json", "statistics file is missing"),
    "info.json damaged": (lambda r: (r / "meta" / "info.json").write_text("{\"fps\": 1"), "info.json",
                          "cannot be read"),
}
WARNINGS = {"statistics disagree"}  # the data is intact; training runs with less exact normalisation


def set_stat(root: Path, feature: str, name: str, value: list) -> None:
    stats = json.loads((root / "meta" / "stats.json").read_text())
    stats[feature][name] = value
    (root / "meta" / "stats.json").write_text(json.dumps(stats))


def check_output(root: Path, capsys: pytest.CaptureFixture, *flags: str) -> tuple[int, list[str]]:
    """Exit code and printed lines of `vla data check ROOT [flags]`."""
    code = main(["data", "check", str(root), *flags])
    return code, capsys.readouterr().out.splitlines()


def test_clean_datasets_have_no_problems(clean: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    for root in clean.values():
        assert check_dataset(root) == []
        code, lines = check_output(root, capsys, "--strict")
        assert code == 0 and lines == [f"ok: {root} has no problems (0 errors, 0 warnings)"]


@pytest.mark.parametrize("storage", ["video", "image"])
def test_lerobot_statistics_are_warnings_until_rewritten(storage: str, video_ds: Path, image_ds: Path,
                                                         tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """LeRobot's writer averages per-episode quantiles: the dataset is usable (exit 0), --strict fails on it,
    and every warning names the command that rewrites exact statistics, after which there is none."""
    root = tmp_path / "ds"
    shutil.copytree(video_ds if storage == "video" else image_ds, root)  # stats.json as LeRobot wrote it
    problems = check_dataset(root)
    assert problems and all(p.severity is WARNING for p in problems), "\n".join(map(str, problems))
    assert all("meta/stats.json (" in p.where for p in problems)
    assert any("LeRobot averages per-episode quantiles" in p.what for p in problems)

    code, lines = check_output(root, capsys)
    assert code == 0
    assert lines[-1] == f"0 errors, {len(problems)} warnings in {root}"
    for line in lines[:-1]:
        assert line.startswith(f"warning: {root / 'meta' / 'stats.json'} (")
        assert line.endswith(f"-> fix: rewrite exact statistics with `vla data stats {root} --write`")
    assert check_output(root, capsys, "--strict")[0] == 1

    assert main(["data", "stats", str(root), "--write"]) == 0
    capsys.readouterr()
    assert check_dataset(root) == []
    assert check_output(root, capsys, "--strict") == (0, [f"ok: {root} has no problems (0 errors, 0 warnings)"])


def test_damage_is_an_error_besides_lerobot_warnings(video_ds: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """A NaN in a state column of a dataset that also has LeRobot's approximate statistics: exit 1, the error is
    listed first, and the damaged feature gets no statistics warning on top."""
    root = tmp_path / "ds"
    shutil.copytree(video_ds, root)
    set_nan(root, "observation.state")
    problems = check_dataset(root)
    errors = [p for p in problems if p.is_error]
    assert len(errors) == 1 and errors[0].where == f"{root / 'data'} (observation.state)"
    assert "NaN values in 1 frames, first at episode 1 frame 1" in errors[0].what
    assert not any("observation.state" in p.where for p in problems if not p.is_error)

    code, lines = check_output(root, capsys)
    assert code == 1
    assert lines[0].startswith(f"error: {root / 'data'} (observation.state): NaN values") and "-> fix: " in lines[0]
    assert all(line.startswith("warning: ") for line in lines[1:-1])
    assert re.fullmatch(rf"1 error, {len(problems) - 1} warnings? in {re.escape(str(root))}", lines[-1])


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("fps", "thirty", "expected a positive whole number of frames per second"),
    ("fps", 0, "expected a positive whole number of frames per second"),
    ("total_frames", "27", "expected a whole number >= 0"),
    ("features", ["action"], "expected an object mapping each feature name"),
    ("data_path", None, "expected a path template"),
])  # fmt: skip
def test_info_json_field_of_wrong_type_is_one_clear_error(field: str, value: object, expected: str,
                                                          clean: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "ds"
    shutil.copytree(clean["video"], root)
    info = json.loads((root / "meta" / "info.json").read_text())
    info[field] = value
    (root / "meta" / "info.json").write_text(json.dumps(info))
    problems = check_dataset(root)
    assert len(problems) == 1 and problems[0].is_error, problems
    assert problems[0].where == f"{root / 'meta' / 'info.json'} ({field})"
    assert f"{field} is {json.dumps(value)}" in problems[0].what and expected in problems[0].what

    code, lines = check_output(root, capsys)
    err = capsys.readouterr().err
    assert code == 1 and "unexpected" not in err
    assert lines == [str(problems[0]), f"1 error, 0 warnings in {root}"]
    assert lines[0].startswith(f"error: {root / 'meta' / 'info.json'} ({field}): {field} is ")
    assert lines[0].endswith(f"-> fix: correct {field} in meta/info.json")


def assert_no_crash(root: Path, capsys: pytest.CaptureFixture) -> None:
    """The other tools stop with one readable line (exit 2) or succeed; never exit 3 (an unforeseen exception)."""
    for command in (["data", "cache", str(root)], ["data", "stats", str(root)]):
        code = main(command)
        err = capsys.readouterr().err
        assert code in (0, 2), f"{command}: exit {code}: {err}"
        if code == 2:
            assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_is_found_with_its_location(name: str, clean: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    damage, where, what = CORRUPTIONS[name]
    severity = WARNING if name in WARNINGS else ERROR
    root = tmp_path / "ds"
    shutil.copytree(clean["video"], root)
    damage(root)
    problems = check_dataset(root)
    assert any(where in p.where and what in p.what + " " + p.fix and p.severity is severity for p in problems), \
        f"{name}: expected {severity} '{what}' at '{where}', got:\n" + "\n".join(map(str, problems))
    code, lines = check_output(root, capsys)
    assert any(line.startswith(f"{severity}: ") and where in line and what.split(":")[0] in line for line in lines)
    if severity is ERROR:
        assert code == 1 and re.match(r"[1-9]\d* errors?, \d+ warnings? in ", lines[-1]), lines[-1]
    else:
        assert code == 0 and lines[-1] == f"0 errors, {len(problems)} warning{'s' * (len(problems) > 1)} in {root}"
        assert check_output(root, capsys, "--strict")[0] == 1
    assert_no_crash(root, capsys)


def test_image_storage_damage_is_found(clean: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cam = "observation.images.wrist"
    root = tmp_path / "missing"
    shutil.copytree(clean["image"], root)
    edit_column(root / DATA2, cam, lambda cells: [None] * len(cells))  # the camera is absent from episode 4
    problems = [str(p) for p in check_dataset(root)]
    assert any(cam in p and "episode 4 frame 0" in p and "no image stored" in p for p in problems), problems
    assert_no_crash(root, capsys)

    root = tmp_path / "garbled"
    shutil.copytree(clean["image"], root)

    def garble(cells: list) -> list:
        cells[2] = {"bytes": cells[2]["bytes"][:40], "path": None}  # a cut-off PNG in episode 0
        return cells

    edit_column(root / DATA0, cam, garble)
    problems = [str(p) for p in check_dataset(root)]
    assert any("episode 0 frame 2" in p and "cannot be read" in p for p in problems), problems
    assert_no_crash(root, capsys)


def test_not_a_dataset_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "check", str(tmp_path)]) == 1
    assert "not a LeRobot dataset (meta/info.json is missing)" in capsys.readouterr().out
    assert main(["data", "cache", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}: not a LeRobot dataset")
    assert main(["data", "cache", str(tmp_path), "--size", "big"]) == 2
    assert "--size: must look like 640x480 (width x height" in capsys.readouterr().err


def test_counts_are_reported_not_repeated(clean: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "ds"
    shutil.copytree(clean["video"], root)
    edit_column(root / DATA0, "observation.state", lambda rows: [[float("inf")] * 3 for _ in rows])
    problems = [p for p in check_dataset(root, stats=False) if "observation.state" in p.where]
    assert len(problems) == 1 and "inf values in 19 frames, first at episode 0 frame 0" in problems[0].what
    assert np.isinf(pq.read_table(root / DATA0).column("observation.state").to_pylist()[0][0])
