"""A trained VLA checkpoint as a `ChunkPolicy`: observation in the arm's units in, action chunk in the arm's units
out, through the processors saved with the weights (so deployment normalises exactly as training did).

Real-time chunking (`rtc`):
- "guidance" (default): inference-time inpainting with the vector-Jacobian product through the expert
  (`vla.model.rtc.sample_guided`), for any checkpoint. It costs a backward pass per denoising step (about 2.4x the
  time of a plain chunk at `tiny`);
- "training": for a checkpoint trained with `rtc_max_delay` >= the requested delay, the committed actions are
  given as clean leading tokens (`vla.model.rtc.sample_with_prefix`): no backward pass. Beyond a longer delay, or
  for a checkpoint trained without it, it falls back to guidance;
- "off": ignore the prefix.
Guidance is the default because it joined chunks more smoothly in `vla chunking-eval` on both checkpoints we
trained with `rtc_max_delay` (2,000 and 8,000 steps; README): it pulls the whole overlap with the previous chunk
towards it, with decaying weights, where training-time conditioning fixes only the committed actions and leaves
the first fresh one to the model (at zero delay it conditions on nothing at all).
Both this and `CheckpointActor` (rollouts) run the checkpoint through `vla.policies.inference.InferencePolicy`: it
normalises the prefix with the checkpoint's own normaliser step and asks the policy's `predict_action_chunk(...,
inference_delay=, prev_chunk_left_over=)`, the method LeRobot's `lerobot-rollout --inference.type=rtc` calls too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla.policies.configuration_vla import RTC_MODES
from vla.runtime.policy import PolicySpec, RequestObservation


def config_cameras(config: Any) -> dict[str, tuple[int, int]]:
    """The cameras a loaded policy's config was trained on, by name, each (height, width)."""
    return {key.removeprefix("observation.images."): (int(ft.shape[1]), int(ft.shape[2]))
            for key, ft in config.image_features.items()}  # fmt: skip


def checkpoint_cameras(path: str | Path) -> dict[str, tuple[int, int]] | None:
    """`config_cameras` read from a saved policy's config.json without loading it; None where it has none (a
    directory of LoRA adapters names its base elsewhere)."""
    import json

    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    try:
        features = json.loads(config.read_text()).get("input_features") or {}
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the policy's cameras from {config}: {err}") from None
    return {key.removeprefix("observation.images."): (int(ft["shape"][1]), int(ft["shape"][2]))
            for key, ft in features.items() if ft.get("type") == "VISUAL"}  # fmt: skip


class CheckpointPolicy:
    def __init__(self, path: str | Path, device: str = "cpu", rtc_mode: str = "guidance", fps: float = 30.0,
                 dtype: str | None = None, compile: bool = False, task: str = ""):  # fmt: skip
        from vla.policies.inference import InferencePolicy

        if rtc_mode not in RTC_MODES:
            raise ValueError(f"rtc_mode must be one of {RTC_MODES}, not '{rtc_mode}'")
        self.rtc_mode, self.device = rtc_mode, device
        self.runner = InferencePolicy.load(path, device, dtype, compile)
        if not self.runner.ours:
            raise ValueError(f"{path} is a '{self.runner.config.type}' checkpoint; the robot side serves ours ('vla')")
        config = self.policy.config
        cameras = config_cameras(config)
        self.spec = PolicySpec(
            chunk_size=int(config.chunk_size or 0), action_names=tuple(self._names("action", config.action_feature)),
            state_names=tuple(self._names("observation.state", config.robot_state_feature)), cameras=cameras,
            fps=fps, supports_prefix=rtc_mode != "off",
        )  # fmt: skip
        if config.compile:
            self.warm_up(task)

    @property
    def policy(self) -> Any:
        return self.runner.policy

    def warm_up(self, task: str = "") -> None:
        """One chunk on a blank observation with `task` (and one continuing a prefix, unless `rtc_mode` is off), so
        that `compile` compiles here, before a control loop starts, and not on the robot's first real chunk. An
        instruction whose tokens fall in another length bucket than `task`'s compiles once more when first seen."""
        spec = self.spec
        state = np.zeros(len(spec.state_names), np.float32)
        images = {name: np.zeros((h, w, 3), np.uint8) for name, (h, w) in spec.cameras.items()}
        self.infer(RequestObservation(state, images, task))
        if self.rtc_mode != "off":
            prefix = np.zeros((spec.chunk_size // 2, len(spec.action_names)), np.float32)
            self.infer(RequestObservation(state, images, task, prefix=prefix, delay=1))
        self.reset()

    @staticmethod
    def _names(key: str, feature) -> list[str]:
        n = int(feature.shape[0]) if feature is not None else 0
        return [f"{key}[{i}]" for i in range(n)]

    def reset(self) -> None:
        self.runner.reset()

    def infer(self, obs: RequestObservation) -> np.ndarray:
        batch: dict = {"task": obs.task, "observation.state": torch.from_numpy(np.asarray(obs.state, np.float32))}
        for name, image in obs.images.items():
            batch[f"observation.images.{name}"] = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        prefix = torch.from_numpy(np.asarray(obs.prefix, np.float32)) if obs.prefix is not None else None
        chunk = self.runner.chunk(batch, prefix=prefix, delay=obs.delay, rtc_mode=self.rtc_mode)
        return chunk[0].cpu().numpy().astype(np.float32)


def load_checkpoint_policy(path: str | Path, device: str = "cpu", rtc_mode: str = "guidance", dtype: str | None = None,
                           compile: bool = False, task: str = "") -> CheckpointPolicy:  # fmt: skip
    return CheckpointPolicy(path, device=device, rtc_mode=rtc_mode, dtype=dtype, compile=compile, task=task)


class PresetPolicy:
    """A randomly initialised network of a model preset (`tiny`, `small`, `smolvla`) behind the `ChunkPolicy`
    interface: the compute of real inference without a trained checkpoint (benchmarks, latency tests). Its
    actions are noise around the observed state, so it is for timing only."""

    def __init__(self, preset: str, names: tuple[str, ...], cameras: dict[str, tuple[int, int]], fps: float = 30.0,
                 device: str = "cpu", dtype: str = "float32"):  # fmt: skip
        from vla.model import PRESETS
        from vla.model.observation import Observation

        self._observation = Observation
        torch.manual_seed(0)
        self.cfg = PRESETS[preset]
        self.model = self.cfg.create().to(device).eval()
        self.device, self.dtype = device, dtype
        self.spec = PolicySpec(self.cfg.chunk_size, names, names, cameras, fps, supports_prefix=True)

    def reset(self) -> None:
        pass

    @torch.no_grad()
    def infer(self, obs: RequestObservation) -> np.ndarray:
        cfg, dev = self.cfg, self.device
        images = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None].float().to(dev) / 255.0
                  for im in obs.images.values()]  # fmt: skip
        n = len(images)
        fake = cfg.fake_obs(1, num_cameras=max(n, 1))
        state = torch.from_numpy(np.asarray(obs.state, np.float32))[None].to(dev)
        model_obs = self._observation(images=images or fake.images, image_masks=fake.image_masks.to(dev), state=state,
                                      tokens=fake.tokens.to(dev), token_mask=fake.token_mask.to(dev))  # fmt: skip
        bf16 = self.dtype == "bfloat16"
        with torch.autocast(dev.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            actions = self.model.sample_actions(model_obs)
        a = len(self.spec.action_names)
        return (np.asarray(obs.state, np.float32)[:a] + actions[0, :, :a].float().cpu().numpy()).astype(np.float32)


class CheckpointActor:
    """A trained checkpoint with its saved processors, acting on a batch of env observations: our VLA, or any other
    LeRobot policy (ACT, Diffusion Policy, SmolVLA, ...) by the `type` in its config.json, so one harness rolls
    every policy out (`benchmarks/bench_learn.py`)."""

    def __init__(self, path: str | Path, device: str = "cpu", action_samples: int | None = None):
        from vla.policies.inference import InferencePolicy

        self.name = str(path)
        self.runner = InferencePolicy.load(path, device)
        self.cameras = config_cameras(self.runner.config)  # a rollout renders exactly these
        if action_samples is not None:  # chunks averaged per inference, over the checkpoint's own setting
            if not self.runner.ours:
                raise ValueError(f"action samples apply to our VLA checkpoints, not '{self.runner.config.type}'")
            self.runner.config.action_samples = action_samples

    def reset(self, seed: int | None = None) -> None:
        """A new batch of episodes: the action queue emptied and, given a seed, the policy's sampling seeded."""
        self.runner.reset()
        if seed is not None:
            torch.manual_seed(seed)

    def act(self, observations: list[dict[str, Any]], tasks: list[str]) -> np.ndarray:
        return self.runner.act(env_batch(observations, tasks)).cpu().numpy()


def env_batch(observations: list[dict[str, Any]], tasks: list[str]) -> dict[str, Any]:
    """Env observations (`pixels` by camera as (H, W, 3) uint8, `agent_pos`) as one LeRobot batch, frames uint8."""
    batch: dict[str, Any] = {"task": tasks}
    for cam in observations[0]["pixels"]:
        images = np.stack([o["pixels"][cam] for o in observations])
        batch[f"observation.images.{cam}"] = torch.from_numpy(images).permute(0, 3, 1, 2)
    batch["observation.state"] = torch.from_numpy(np.stack([o["agent_pos"] for o in observations])).float()
    return batch
