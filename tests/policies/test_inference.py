"""`InferencePolicy`: a checkpoint with its processors, the arm's units in and out, for ours and LeRobot's own types."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from lerobot.configs import FeatureType, PolicyFeature
from lerobot.policies import ACTConfig, get_policy_class, make_pre_post_processors

from vla.envs.rollout import EVAL_SEED, rollout
from vla.policies.configuration_vla import VLAConfig
from vla.policies.inference import InferencePolicy
from vla.policies.modeling_vla import VLAPolicy
from vla.policies.processor_vla import make_vla_pre_post_processors
from vla.runtime.checkpoint import CheckpointActor

SIZE = 96  # the so101 envs' frames


def features() -> tuple[dict[str, PolicyFeature], dict[str, PolicyFeature]]:
    inputs = {f"observation.images.{cam}": PolicyFeature(type=FeatureType.VISUAL, shape=(3, SIZE, SIZE))
              for cam in ("front", "wrist")}  # fmt: skip
    inputs["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(6,))
    return inputs, {"action": PolicyFeature(type=FeatureType.ACTION, shape=(6,))}


def stats() -> dict[str, dict[str, torch.Tensor]]:
    out = {k: {"mean": torch.full((6,), 20.0), "std": torch.full((6,), 30.0)} for k in ("observation.state", "action")}
    for cam in ("front", "wrist"):
        out[f"observation.images.{cam}"] = {"mean": torch.full((3, 1, 1), 0.5), "std": torch.full((3, 1, 1), 0.25)}
    return out


def save(policy, pre, post, path: Path) -> Path:
    for part in (policy, pre, post):
        part.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = VLAConfig(preset="tiny", chunk_size=8, n_action_steps=4, num_steps=2, tokenizer_max_length=48, device="cpu",
                    push_to_hub=False)  # fmt: skip
    cfg.input_features, cfg.output_features = features()
    torch.manual_seed(0)
    return save(VLAPolicy(cfg), *make_vla_pre_post_processors(cfg, dataset_stats=stats()),
                tmp_path_factory.mktemp("vla"))  # fmt: skip


@pytest.fixture(scope="module")
def act(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LeRobot's ACT, small and untrained (ResNet-18 without downloaded weights)."""
    cfg = ACTConfig(chunk_size=8, n_action_steps=4, dim_model=32, dim_feedforward=64, n_heads=2, n_encoder_layers=1,
                    n_decoder_layers=1, latent_dim=8, pretrained_backbone_weights=None, device="cpu",
                    push_to_hub=False)  # fmt: skip
    cfg.input_features, cfg.output_features = features()
    torch.manual_seed(0)
    policy = get_policy_class("act")(cfg)
    return save(policy, *make_pre_post_processors(cfg, dataset_stats=stats()), tmp_path_factory.mktemp("act"))


def test_a_prefix_is_normalised_by_the_checkpoints_own_statistics(ours: Path) -> None:
    runner = InferencePolicy.load(ours)
    actions = torch.tensor([[[20.0] * 6, [50.0] * 6, [-10.0] * 6]])
    np.testing.assert_allclose(runner.normalise_actions(actions)[0, :, 0].numpy(), [0.0, 1.0, -1.0], atol=1e-6)


def test_any_lerobot_checkpoint_rolls_out_through_one_harness(ours: Path, act: Path, tmp_path: Path) -> None:
    for path, kind in ((ours, "vla"), (act, "act")):
        actor = CheckpointActor(path)
        assert actor.runner.config.type == kind
        result = rollout(actor, "so101/reach", episodes=2, n_envs=2, out=tmp_path / kind, videos=0, progress=False)
        assert result.episodes == 2 and result.mean_steps > 0
        assert result.per_target == {}  # reach's dot is a position, not an object an instruction names


def test_a_rollout_renders_the_cameras_and_size_the_checkpoint_was_trained_on(tmp_path: Path) -> None:
    """A policy recorded with `--cameras close,wrist --image-size 48x40` is shown those two views at 40x48 in a
    rollout, not the env's default front and wrist at 96x96."""
    from vla.envs.rollout import env_views

    cfg = VLAConfig(preset="tiny", chunk_size=8, n_action_steps=8, num_steps=1, tokenizer_max_length=48, device="cpu",
                    push_to_hub=False)  # fmt: skip
    inputs, outputs = features()
    cfg.input_features = {"observation.images.close": PolicyFeature(type=FeatureType.VISUAL, shape=(3, 40, 48)),
                          "observation.images.wrist": PolicyFeature(type=FeatureType.VISUAL, shape=(3, 40, 48)),
                          "observation.state": inputs["observation.state"]}  # fmt: skip
    cfg.output_features = outputs
    data_stats = stats()
    data_stats["observation.images.close"] = data_stats.pop("observation.images.front")
    path = save(VLAPolicy(cfg), *make_vla_pre_post_processors(cfg, dataset_stats=data_stats), tmp_path / "ckpt")
    seen: list[dict[str, tuple[int, ...]]] = []

    class Watched(CheckpointActor):
        def act(self, observations, tasks):
            seen.append({cam: image.shape for cam, image in observations[0]["pixels"].items()})
            return super().act(observations, tasks)

    actor = Watched(path)
    assert actor.cameras == {"close": (40, 48), "wrist": (40, 48)}
    rollout(actor, "so101/reach", episodes=1, n_envs=1, out=tmp_path / "out", videos=0, progress=False)
    assert seen and all(s == {"close": (40, 48, 3), "wrist": (40, 48, 3)} for s in seen), seen[:2]
    with pytest.raises(ValueError, match="differ in size"):
        env_views({"close": (40, 48), "wrist": (96, 96)})
    assert env_views(None) == {}


def test_a_rollout_can_average_several_sampled_chunks(ours: Path, act: Path) -> None:
    """`vla rollout --action-samples K` sets the loaded checkpoint's `action_samples`; ours only."""
    actor = CheckpointActor(ours, action_samples=3)
    assert actor.runner.config.action_samples == 3 and CheckpointActor(ours).runner.config.action_samples == 1
    with pytest.raises(ValueError, match="action samples apply to our VLA checkpoints, not 'act'"):
        CheckpointActor(act, action_samples=2)
    with pytest.raises(ValueError, match="action_samples=0 must be >= 1"):
        VLAConfig(preset="tiny", action_samples=0)


def test_only_our_checkpoints_continue_a_prefix(act: Path) -> None:
    runner = InferencePolicy.load(act)
    batch = {"task": "reach", "observation.state": torch.zeros(6)}
    for cam in ("front", "wrist"):
        batch[f"observation.images.{cam}"] = torch.zeros(3, SIZE, SIZE, dtype=torch.uint8)
    chunk = runner.chunk(batch)
    assert chunk.shape == (1, 8, 6) and torch.isfinite(chunk).all()
    with pytest.raises(ValueError, match="'act' checkpoint cannot continue a prefix"):
        runner.chunk(batch, prefix=torch.zeros(2, 6), delay=1)
    with pytest.raises(ValueError, match="--dtype and --compile apply to ours"):
        InferencePolicy.load(act, dtype="int8")


def test_a_rollout_in_two_processes_plays_what_one_process_plays(ours: Path, tmp_path: Path) -> None:
    """`workers=2`: each process loads the checkpoint and plays whole waves, seeded as one process seeds them, so
    every episode ends the same (steps, return, success) and the first episode's video is written."""
    load = functools.partial(CheckpointActor, ours)
    kwargs = dict(episodes=5, n_envs=2, videos=1, progress=False)
    one = rollout(load(), "so101/reach", out=tmp_path / "one", **kwargs)
    two = rollout(load, "so101/reach", out=tmp_path / "two", workers=2, **kwargs)
    detail = [json.loads((tmp_path / d / "results.json").read_text())["episodes_detail"] for d in ("one", "two")]
    assert [e["episode"] for e in detail[1]] == [0, 1, 2, 3, 4] and [e["seed"] for e in detail[1]] == \
        [EVAL_SEED + k for k in range(5)]
    assert detail[0] == detail[1]
    assert len({e["return"] for e in detail[0]}) == 5  # the episodes differ: the comparison is not of constants
    assert (two.successes, two.episodes, two.mean_steps) == (one.successes, one.episodes, one.mean_steps)
    assert [Path(v).name for v in two.videos] == [Path(v).name for v in one.videos] and len(two.videos) == 1
    with pytest.raises(ValueError, match="needs a loader of the policy"):
        rollout(load(), "so101/reach", out=tmp_path / "refused", workers=2, **kwargs)
    missing = functools.partial(CheckpointActor, tmp_path / "no-such-checkpoint")
    with pytest.raises(RuntimeError, match=r"(?s)rollout worker \d failed:.*no-such-checkpoint"):
        rollout(missing, "so101/reach", out=tmp_path / "failed", workers=2, **kwargs)


class EndsSilently(CheckpointActor):
    """A worker's actor whose process exits cleanly (code 0) on its first action, without saying "done"."""

    def act(self, observations, tasks):
        os._exit(0)


def test_a_worker_that_ends_without_finishing_stops_the_rollout(ours: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"rollout worker .* ended \(exit code 0\) before finishing its episodes"):
        rollout(functools.partial(EndsSilently, ours), "so101/reach", episodes=2, n_envs=1, out=tmp_path, videos=0,
                progress=False, workers=2)  # fmt: skip


def test_an_interrupted_rollout_keeps_the_episodes_it_finished(ours: Path, tmp_path: Path) -> None:
    """Ctrl-C in the second wave: results.json holds the first wave's episodes, marked interrupted."""

    class Stopped(CheckpointActor):
        waves = 0

        def reset(self, seed=None):
            self.waves += 1
            super().reset(seed)

        def act(self, observations, tasks):
            if self.waves == 2:
                raise KeyboardInterrupt
            return super().act(observations, tasks)

    with pytest.raises(KeyboardInterrupt):
        rollout(Stopped(ours), "so101/reach", episodes=4, n_envs=2, out=tmp_path, videos=0, progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["interrupted"] is True and saved["episodes"] == 2
    assert [e["seed"] for e in saved["episodes_detail"]] == [EVAL_SEED, EVAL_SEED + 1]
