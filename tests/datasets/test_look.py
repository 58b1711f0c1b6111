"""`vla data look`: the contact sheet holds the stored frames exactly, of the first episodes of every task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SIZE, TASKS, frame_image

from vla.datasets.cli import main
from vla.datasets.look import GAP, build_sheet, look_path


def cell(grid: np.ndarray, row: int, col: int) -> np.ndarray:
    h, w = SIZE
    return grid[row * (h + GAP): row * (h + GAP) + h, col * (w + GAP): col * (w + GAP) + w]


def test_sheet_tiles_the_stored_frames_of_the_first_episodes_of_each_task(image_ds: Path) -> None:
    # episodes 0-4 (lengths 6, 9, 4, 1, 7) alternate between the two tasks: 0, 2, 4 pick; 1, 3 drawer
    sheet = build_sheet(image_ds, per_task=2, frames=3)
    assert sheet.rows == [(TASKS[0], 0), (TASKS[0], 2), (TASKS[1], 1), (TASKS[1], 3)]
    assert sheet.columns == [(f"observation.images.{cam}", f) for cam in ("front", "wrist") for f in (0.0, 0.5, 1.0)]
    lengths = {0: 6, 2: 4, 1: 9, 3: 1}
    for r, (_, episode) in enumerate(sheet.rows):
        last = lengths[episode] - 1
        for k, t in enumerate((0, round(last / 2), last)):  # the one-frame episode shows its frame three times
            for c in range(2):
                np.testing.assert_array_equal(cell(sheet.grid, r, c * 3 + k), frame_image(episode, t, c, SIZE))
    h, w = SIZE
    assert sheet.grid.shape == (4 * (h + GAP), 6 * (w + GAP), 3)


def test_vla_data_look_writes_a_png_beside_the_dataset(image_ds: Path, fresh_copy, capsys) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    ds = fresh_copy(image_ds)
    assert main(["data", "look", str(ds), "--per-task", "1", "--frames", "2"]) == 0
    out = look_path(ds)
    assert out == ds.parent / "ds.look.png" and str(out) in capsys.readouterr().out
    with Image.open(out) as image:
        width, height = image.size
    assert width > 4 * SIZE[1] and height > 2 * SIZE[0]  # two rows of four frames, drawn at twice their size
    assert not (ds / "ds.look.png").exists()  # the dataset itself is untouched


def test_vla_data_look_names_what_is_wrong(image_ds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "look", str(tmp_path)]) == 2
    assert "meta/info.json is missing" in capsys.readouterr().err
    assert main(["data", "look", str(image_ds), "--per-task", "0", "--out", str(tmp_path / "s.png")]) == 2
    assert "must be at least 1" in capsys.readouterr().err
