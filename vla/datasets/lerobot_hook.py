"""The one place we patch LeRobot: `lerobot-train` reads through the frame cache when the dataset has one.

LeRobot 0.4.4's `lerobot.datasets.factory.make_dataset(cfg)` builds the training dataset with
`LeRobotDataset(cfg.dataset.repo_id, root=..., episodes=..., delta_timestamps=..., image_transforms=...,
revision=..., video_backend=..., tolerance_s=...)`, looking `LeRobotDataset` up in the factory module's globals at
call time. `install_cache_hook()` replaces that one global with `dataset_or_cache`, which returns
`open_dataset(...)` (cached_dataset.py): the frame cache when $VLA_FRAME_CACHE allows it (auto, the default: when
a cache exists beside the dataset, rebuilt first if stale; on: built when missing; off: never), LeRobotDataset
otherwise. Nothing else in LeRobot changes; `lerobot.datasets.lerobot_dataset.LeRobotDataset` itself is untouched.

When the run trains our VLA policy with identity image normalisation (its default) and no image transforms, the
cache returns uint8 frames (cached_dataset.py explains why; the policy scales them). The hook reads that from
`make_dataset`'s own `cfg` argument, in the caller's frame: `make_dataset(cfg)` passes the dataset class no
policy information, and LeRobot 0.4.4 is pinned. Anything unexpected there keeps float32 frames.

`lerobot-train` imports our plugin (`lerobot_policy_vla`, which calls this) in `register_third_party_plugins()`
before `train()` calls `make_dataset`, so the hook is in place in time. The streaming dataset is not affected.
"""

from __future__ import annotations

import sys
from typing import Any


def frame_dtype_for(train_cfg: Any) -> str:
    """uint8 when `train_cfg` (a TrainPipelineConfig) trains the VLA with identity image normalisation and no
    image transforms; float32 otherwise."""
    policy: Any = getattr(train_cfg, "policy", None)
    try:
        if getattr(policy, "type", None) != "vla":
            return "float32"
        if getattr(train_cfg.dataset.image_transforms, "enable", True):
            return "float32"
        visual = policy.normalization_mapping.get("VISUAL")
        return "uint8" if getattr(visual, "value", visual) == "IDENTITY" else "float32"
    except AttributeError:
        return "float32"


def install_cache_hook() -> None:
    """Route `lerobot.datasets.factory.make_dataset` through `open_dataset`. Idempotent."""
    import lerobot.datasets.factory as factory

    original = factory.LeRobotDataset
    if getattr(original, "vla_cache_hook", False):
        return

    def dataset_or_cache(repo_id: str, root: Any = None, **kwargs: Any) -> Any:
        from vla.datasets.cached_dataset import open_dataset

        caller_cfg = sys._getframe(1).f_locals.get("cfg")  # make_dataset(cfg)
        return open_dataset(repo_id, root, lerobot_cls=original, frame_dtype=frame_dtype_for(caller_cfg), **kwargs)

    setattr(dataset_or_cache, "vla_cache_hook", True)  # noqa: B010
    setattr(dataset_or_cache, "original", original)  # noqa: B010
    factory.LeRobotDataset = dataset_or_cache  # type: ignore[assignment,misc]


def uninstall_cache_hook() -> None:
    import lerobot.datasets.factory as factory

    original = getattr(factory.LeRobotDataset, "original", None)
    if original is not None:
        factory.LeRobotDataset = original  # type: ignore[misc]
