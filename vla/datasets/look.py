"""`vla data look`: a contact sheet of what a dataset stores, the frames a policy will be trained on.

One row per episode, the first few episodes of every task (its instruction on the row), and for each camera a few
frames spread over the episode. The frames are the stored ones, read the way training reads them (the frame cache
when it is up to date, else LeRobot's decoder), pixel for pixel, so what is wrong in the data shows: six sessions of
Meta-World recordings stored another task's scene for five of six tasks (a renderer drawing in the wrong OpenGL
context) and every figure, loss and statistic looked plausible; one look at the frames would have shown it.
`vla record` writes this sheet when it finishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla.datasets.lerobot_io import LeRobotSource

GAP = 2  # white pixels between cells


@dataclass
class Sheet:
    grid: np.ndarray  # (rows * (H + GAP), cols * (W + GAP), 3) uint8: the frames, exactly, on white
    rows: list[tuple[str, int]]  # (instruction, episode index) of each row, top to bottom
    columns: list[tuple[str, float]]  # (camera, fraction of the episode) of each column, left to right
    cell: tuple[int, int]  # (H, W) of one frame


def look_path(dataset_root: str | Path) -> Path:
    """Where the sheet of `dataset_root` goes by default: `<parent>/<name>.look.png` (the dataset is untouched)."""
    root = Path(dataset_root).resolve()
    return root.with_name(root.name + ".look.png")


def build_sheet(dataset_root: str | Path, per_task: int = 3, frames: int = 4) -> Sheet:
    """The first `per_task` episodes of each task, `frames` frames of each camera from first to last."""
    from vla.datasets.cache import cache_status
    from vla.datasets.cached_dataset import open_dataset

    if per_task < 1 or frames < 1:
        raise ValueError(f"per_task and frames must be at least 1; got {per_task} and {frames}")
    root = Path(dataset_root)
    source = LeRobotSource(root)  # raises a DatasetError naming the file when the dataset is not one
    cameras = source.cameras
    if not cameras:
        raise ValueError(f"{root} stores no camera frames: nothing to look at")
    mode = "auto" if cache_status(root).valid else "off"  # a stale cache is not rebuilt for a look
    dataset = open_dataset(f"local/{root.name}", root, mode=mode, return_uint8=True)
    names, task_index = source.task_names(), source.read_lowdim(["task_index"])["task_index"]
    chosen: dict[str, list] = {}
    for ep in source.episodes:
        if ep.length == 0:
            continue
        task = names[int(task_index[ep.start])]
        if len(chosen.setdefault(task, [])) < per_task:
            chosen[task].append(ep)
    fractions = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    h, w = (int(n) for n in source.features[cameras[0]]["shape"][:2])
    sizes = {tuple(int(n) for n in source.features[c]["shape"][:2]) for c in cameras}
    if len(sizes) > 1:
        raise ValueError(f"{root}: cameras of different sizes {sorted(sizes)}; the sheet tiles equal frames")
    rows = [(task, ep) for task, eps in chosen.items() for ep in eps]
    grid = np.full((len(rows) * (h + GAP), len(cameras) * frames * (w + GAP), 3), 255, dtype=np.uint8)
    for r, (_, ep) in enumerate(rows):
        for k, fraction in enumerate(fractions):
            sample = dataset[ep.start + round(fraction * (ep.length - 1))]
            for c, camera in enumerate(cameras):
                col = c * frames + k
                image = to_hwc_uint8(sample[camera])
                grid[r * (h + GAP): r * (h + GAP) + h, col * (w + GAP): col * (w + GAP) + w] = image
    return Sheet(grid, [(task, ep.index) for task, ep in rows],
                 [(camera, float(f)) for camera in cameras for f in fractions], (h, w))


def to_hwc_uint8(frame: object) -> np.ndarray:
    """A dataset frame, torch (3, H, W), as (H, W, 3) uint8: uint8 from the cache and from video, but float in
    [0, 1] from LeRobot's PNG-stored frames (its `return_uint8` covers video only)."""
    array = np.asarray(frame)
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array.transpose(1, 2, 0))


def write_sheet(sheet: Sheet, out: str | Path, title: str = "", scale: float = 2.0) -> Path:
    """The sheet as a PNG: the frames at `scale` (nearest pixel), the instruction and episode left of each row, the
    camera and the point in the episode above each column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = sheet.cell
    dpi = 100
    label_in, top_in = 3.0, 0.9  # inches for the row labels and for the title and column labels
    fig_w = sheet.grid.shape[1] * scale / dpi + label_in
    fig_h = sheet.grid.shape[0] * scale / dpi + top_in
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    ax = fig.add_axes((label_in / fig_w, 0.0, 1 - label_in / fig_w, 1 - top_in / fig_h))
    ax.imshow(sheet.grid, interpolation="nearest")
    ax.set_yticks([r * (h + GAP) + h / 2 for r in range(len(sheet.rows))])
    ax.set_yticklabels([f"{shorten(task)}\nepisode {index}" for task, index in sheet.rows], fontsize=7)
    ax.set_xticks([c * (w + GAP) + w / 2 for c in range(len(sheet.columns))])
    ax.set_xticklabels([f"{camera.rsplit('.', 1)[-1]}\n{fraction:.0%}" for camera, fraction in sheet.columns],
                       fontsize=7)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=9, x=0.01, y=1 - 0.1 / fig_h, ha="left", va="top")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def shorten(text: str, width: int = 44) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def look(dataset_root: str | Path, out: str | Path | None = None, per_task: int = 3, frames: int = 4) -> Path:
    """Build and write the sheet of a dataset; -> the PNG's path (default `look_path`)."""
    root = Path(dataset_root)
    sheet = build_sheet(root, per_task=per_task, frames=frames)
    tasks = len({task for task, _ in sheet.rows})
    title = f"{root.name}: the stored frames of the first {per_task} episodes (at most) of each of {tasks} tasks"
    return write_sheet(sheet, out if out is not None else look_path(root), title=title)
