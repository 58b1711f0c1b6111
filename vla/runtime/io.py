"""The loop's view of the hardware: arrays in a fixed joint order instead of feature dicts.

`FollowerIO` wraps a `vla.hardware.robots.Follower` (whose safety layer every command passes through) and a frame
source; `LeaderIO` wraps a `Leader`; `SharedFrames` reads camera frames that another process (the virtual arm's
twin, or a camera reader) keeps in shared memory. None of these ever waits for a camera.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from vla.hardware.robots import Follower, Leader
from vla.shm import SharedArrays


class SharedFrames:
    """The latest frames in a `SharedArrays` block (`layout` from its writer)."""

    def __init__(self, layout: dict, track: bool = True):
        self.arrays = SharedArrays.attach(layout, track=track)

    def latest(self) -> dict[str, np.ndarray]:
        return self.arrays.read()[1]

    def close(self) -> None:
        self.arrays.shm.close()


class FrameSource(Protocol):
    def latest(self) -> dict[str, np.ndarray]: ...


class FollowerIO:
    def __init__(self, follower: Follower, frames: FrameSource | None = None):
        self.follower, self.frame_source = follower, frames
        self.names = follower.spec.feature_names

    def read(self) -> np.ndarray:
        obs = self.follower.get_observation()
        return np.array([obs[k] for k in self.names], np.float32)

    def frames(self) -> dict[str, np.ndarray]:
        return self.frame_source.latest() if self.frame_source is not None else {}

    def send(self, action: np.ndarray) -> np.ndarray:
        sent = self.follower.send_action({k: float(v) for k, v in zip(self.names, action, strict=True)})
        return np.array([sent[k] for k in self.names], np.float32)

    def release(self) -> None:
        self.follower.bus.set_torque(False)


class LeaderIO:
    def __init__(self, leader: Leader):
        self.leader = leader
        self.names = leader.spec.feature_names

    def read(self) -> np.ndarray:
        action = self.leader.get_action()
        return np.array([action[k] for k in self.names], np.float32)
