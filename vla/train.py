"""`vla train`: LeRobot's `lerobot-train`, reading the training dataset through our zarr frame cache.

It takes every `lerobot-train` flag (`vla train --policy.type=vla --dataset.root=DIR ...`, `--resume`,
`--config_path`; several processes: `accelerate launch --num_processes N $(which vla) train ...`) and runs
LeRobot's own training loop. The one difference:
where the dataset has a frame cache (`vla data cache DATASET`, or $VLA_FRAME_CACHE=on to build it), the training
samples come from `CachedLeRobotDataset` instead of decoding video, pixel-identical and several times faster
(README, "Datasets"). `lerobot-train` itself stays untouched and decodes video as usual.

How: LeRobot 0.6.1's training script (`lerobot.scripts.lerobot_train`) builds its datasets with the module-level
name `make_train_eval_datasets(cfg) -> (train, eval | None)`. In this process only, `run()` rebinds that name to
`datasets_with_cache`, which builds the same training dataset through `open_dataset` and leaves everything it
does not cover (streaming, held-out splits, several datasets, `$VLA_FRAME_CACHE=off`) to LeRobot's function. This
is the only place the stack replaces a LeRobot name; `tests/datasets/test_vla_train.py` fails as soon as that name
or its signature changes in LeRobot.
"""

from __future__ import annotations

import inspect
import logging
import sys
from typing import Any

log = logging.getLogger(__name__)

PATCHED_MODULE = "lerobot.scripts.lerobot_train"
PATCHED_NAME = "make_train_eval_datasets"


def datasets_with_cache(cfg: Any, original: Any) -> tuple[Any, Any]:
    """`make_train_eval_datasets(cfg)` with the training dataset read through the frame cache when one is used."""
    from lerobot.datasets import LeRobotDatasetMetadata, resolve_delta_timestamps
    from lerobot.transforms import ImageTransforms
    from lerobot.utils.constants import IMAGENET_STATS

    from vla.datasets.cached_dataset import CachedLeRobotDataset, open_dataset

    if not isinstance(cfg.dataset.repo_id, str) or cfg.dataset.streaming or cfg.dataset.eval_split:
        return original(cfg)
    meta = LeRobotDatasetMetadata(cfg.dataset.repo_id, root=cfg.dataset.root, revision=cfg.dataset.revision)
    transforms = ImageTransforms(cfg.dataset.image_transforms) if cfg.dataset.image_transforms.enable else None
    dataset = open_dataset(
        cfg.dataset.repo_id, cfg.dataset.root, episodes=cfg.dataset.episodes,
        delta_timestamps=resolve_delta_timestamps(cfg.trainable_config, meta), image_transforms=transforms,
        revision=cfg.dataset.revision, video_backend=cfg.dataset.video_backend, tolerance_s=cfg.tolerance_s,
        return_uint8=True,
    )  # fmt: skip
    if not isinstance(dataset, CachedLeRobotDataset):
        return original(cfg)  # no cache: exactly what lerobot-train does
    if cfg.dataset.use_imagenet_stats:
        import torch

        for key in dataset.meta.camera_keys:
            for stat, values in IMAGENET_STATS.items():
                dataset.meta.stats[key][stat] = torch.tensor(values, dtype=torch.float32)
    return dataset, None


def check_seam(module: Any) -> Any:
    """LeRobot's `make_train_eval_datasets` in `module`, after checking it is still what `vla train` replaces."""
    original = getattr(module, PATCHED_NAME, None)
    if original is None:
        raise RuntimeError(f"{PATCHED_MODULE}.{PATCHED_NAME} is gone: this LeRobot is not the 0.6.1 that vla train "
                           "was written for; use lerobot-train (no frame cache) or the pinned LeRobot")
    params = list(inspect.signature(original).parameters)
    if params != ["cfg"]:
        raise RuntimeError(f"{PATCHED_MODULE}.{PATCHED_NAME} now takes {params}, not (cfg): this LeRobot is not the "
                           "0.6.1 that vla train was written for; use lerobot-train or the pinned LeRobot")
    return original


def run(argv: list[str]) -> None:
    """Run LeRobot's training with `argv` (lerobot-train's flags) and the frame-cache datasets."""
    import importlib

    module = importlib.import_module(PATCHED_MODULE)
    original = check_seam(module)
    setattr(module, PATCHED_NAME, lambda cfg: datasets_with_cache(cfg, original))
    saved = sys.argv
    sys.argv = ["vla train", *argv]
    try:
        module.main()
    finally:
        sys.argv = saved
        setattr(module, PATCHED_NAME, original)

