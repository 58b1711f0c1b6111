"""The one place we patch LeRobot: `lerobot-train` reads through the frame cache when the dataset has one.

LeRobot 0.4.4's `lerobot.datasets.factory.make_dataset(cfg)` builds the training dataset with
`LeRobotDataset(cfg.dataset.repo_id, root=..., episodes=..., delta_timestamps=..., image_transforms=...,
revision=..., video_backend=..., tolerance_s=...)`, looking `LeRobotDataset` up in the factory module's globals at
call time. `install_cache_hook()` replaces that one global with `dataset_or_cache`, which returns
`open_dataset(...)` (cached_dataset.py): the frame cache when $VLA_FRAME_CACHE allows it (auto, the default: when
a cache exists beside the dataset, rebuilt first if stale; on: built when missing; off: never), LeRobotDataset
otherwise. Nothing else in LeRobot changes; `lerobot.datasets.lerobot_dataset.LeRobotDataset` itself is untouched.

`lerobot-train` imports our plugin (`lerobot_policy_vla`, which calls this) in `register_third_party_plugins()`
before `train()` calls `make_dataset`, so the hook is in place in time. The streaming dataset is not affected.
"""

from __future__ import annotations

from typing import Any


def install_cache_hook() -> None:
    """Route `lerobot.datasets.factory.make_dataset` through `open_dataset`. Idempotent."""
    import lerobot.datasets.factory as factory

    original = factory.LeRobotDataset
    if getattr(original, "vla_cache_hook", False):
        return

    def dataset_or_cache(repo_id: str, root: Any = None, **kwargs: Any) -> Any:
        from vla.datasets.cached_dataset import open_dataset

        return open_dataset(repo_id, root, lerobot_cls=original, **kwargs)

    setattr(dataset_or_cache, "vla_cache_hook", True)  # noqa: B010
    setattr(dataset_or_cache, "original", original)  # noqa: B010
    factory.LeRobotDataset = dataset_or_cache  # type: ignore[assignment,misc]


def uninstall_cache_hook() -> None:
    import lerobot.datasets.factory as factory

    original = getattr(factory.LeRobotDataset, "original", None)
    if original is not None:
        factory.LeRobotDataset = original  # type: ignore[misc]
