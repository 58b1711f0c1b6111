"""After a run: the intervention dataset it recorded, and a plot of what happened.

`InterventionRecorder` writes each tick (observation before the command, the command actually sent, the task) to a
LeRobot v3 dataset with one extra feature, `control_source` (0 policy, 1 human, 2 holding), so DAgger-style
fine-tuning can weight or select the human corrections. (The name does not start with `action` or `observation`,
so LeRobot's policies do not mistake it for an input or an output.) Episodes are saved when `end_episode()` is
called and on close; a crash loses at most the episode in progress (vla.datasets.writer).

`plot_run` draws commanded vs measured joints with the source of control shaded and chunk arrivals marked, and
the loop's tick lateness and the chunks' latency below.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vla.datasets.writer import EpisodeWriter
from vla.runtime.loop import HOLD, HUMAN, POLICY, RunLog


class InterventionRecorder:
    def __init__(self, root: str | Path, fps: float, names: tuple[str, ...], cameras: dict[str, tuple[int, int]],
                 task: str, robot_type: str, repo_id: str = "local/interventions", resume: bool = True):  # fmt: skip
        axes = ["height", "width", "channels"]
        features: dict[str, dict] = {
            f"observation.images.{cam}": {"dtype": "video", "shape": (h, w, 3), "names": axes}
            for cam, (h, w) in cameras.items()
        }
        features["observation.state"] = {"dtype": "float32", "shape": (len(names),), "names": list(names)}
        features["action"] = {"dtype": "float32", "shape": (len(names),), "names": list(names)}
        features["control_source"] = {"dtype": "int64", "shape": (1,), "names": ["0=policy,1=human,2=hold"]}
        self.task, self.cameras = task, tuple(cameras)
        self.writer = EpisodeWriter(root, repo_id, fps=round(fps), features=features, robot_type=robot_type,
                                    resume=resume)  # fmt: skip
        self.episodes = 0
        self._end_requested = False

    def __call__(self, tick: int, state: np.ndarray, frames: dict[str, np.ndarray], command: np.ndarray,
                 source: int) -> None:  # fmt: skip
        if self._end_requested:
            self._end_requested = False
            self._save()
        frame: dict[str, object] = {f"observation.images.{cam}": frames[cam] for cam in self.cameras}
        frame["observation.state"] = np.asarray(state, np.float32)
        frame["action"] = np.asarray(command, np.float32)
        frame["control_source"] = np.array([source], np.int64)
        frame["task"] = self.task
        self.writer.add(frame)

    def end_episode(self) -> None:
        """Save the episode so far at the next tick (safe to call from another thread, e.g. a key reader)."""
        self._end_requested = True

    def _save(self) -> None:
        if self.writer.pending:
            self.writer.save()
            self.episodes += 1

    def close(self) -> None:
        """Save what is pending; call after the loop has stopped."""
        self._save()
        self.writer.close()


def plot_run(log: RunLog, path: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = log.arrays()
    t, n = data["t"], len(log.names)
    fig, axes = plt.subplots(n + 1, 1, figsize=(10, 1.6 * (n + 1)), sharex=True)
    colours = {POLICY: "#cfe8cf", HUMAN: "#cfd8f0", HOLD: "#f4d6c8"}
    spans = np.flatnonzero(np.diff(data["source"], prepend=-1))
    for j, name in enumerate(log.names):
        ax = axes[j]
        for k, start in enumerate(spans):
            end = spans[k + 1] if k + 1 < len(spans) else len(t) - 1
            ax.axvspan(t[start], t[end], color=colours[int(data["source"][start])], lw=0)
        ax.plot(t, data["command"][:, j], lw=1.2, label="commanded")
        ax.plot(t, data["measured"][:, j], lw=1.0, ls="--", label="measured")
        for s in t[data["switch"]]:
            ax.axvline(s, color="grey", lw=0.4, alpha=0.6)
        ax.set_ylabel(name, fontsize=8)
    axes[0].legend(loc="upper right", fontsize=7)
    axes[0].set_title(title or "commanded vs measured (green: policy, blue: human, orange: holding; grey: new chunk)")
    ax = axes[-1]
    ax.plot(t, data["lateness"] * 1000, lw=0.8, label="tick lateness (ms)")
    arrivals = t[data["switch"]]
    if len(arrivals) and log.chunk_latency_s:
        ax.plot(arrivals[: len(log.chunk_latency_s)], np.array(log.chunk_latency_s[: len(arrivals)]) * 1000, "o",
                ms=3, label="chunk latency (ms)")  # fmt: skip
    ax.set_xlabel("time (s)")
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
