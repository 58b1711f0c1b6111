"""`CheckpointPolicy`: a saved checkpoint continues the committed actions in the arm's units, per `--rtc` mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lerobot.configs import FeatureType, PolicyFeature

from vla.policies.configuration_vla import VLAConfig
from vla.policies.modeling_vla import VLAPolicy
from vla.policies.processor_vla import make_vla_pre_post_processors
from vla.runtime.checkpoint import CheckpointPolicy
from vla.runtime.policy import RequestObservation

CHUNK, ACTION_DIM, STATE_DIM, MAX_DELAY = 8, 4, 5, 4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = VLAConfig(preset="tiny", chunk_size=CHUNK, n_action_steps=CHUNK, num_steps=10, max_state_dim=8,
                    max_action_dim=8, rtc_max_delay=MAX_DELAY, tokenizer_max_length=48, device="cpu",
                    push_to_hub=False)  # fmt: skip
    cfg.input_features = {"observation.images.front": PolicyFeature(type=FeatureType.VISUAL, shape=(3, 24, 32)),
                          "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,))}
    cfg.output_features = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(ACTION_DIM,))}
    # actions far from zero mean and unit scale: a prefix that skipped normalisation would come back changed
    stats = {"observation.state": {"mean": torch.zeros(STATE_DIM), "std": torch.ones(STATE_DIM)},
             "action": {"mean": torch.full((ACTION_DIM,), 20.0), "std": torch.full((ACTION_DIM,), 30.0)}}
    torch.manual_seed(0)
    policy = VLAPolicy(cfg)
    pre, post = make_vla_pre_post_processors(cfg, dataset_stats=stats)
    path = tmp_path_factory.mktemp("ckpt")
    for part in (policy, pre, post):
        part.save_pretrained(path)
    return path


def request(delay: int) -> RequestObservation:
    rng = np.random.default_rng(0)
    prefix = (20.0 + 30.0 * rng.standard_normal((CHUNK - 2, ACTION_DIM))).astype(np.float32)
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    return RequestObservation(rng.standard_normal(STATE_DIM).astype(np.float32), {"front": image}, "reach",
                              prefix, delay)  # fmt: skip


def committed_error(path: Path, mode: str, delay: int) -> float:
    """Largest |chunk - prefix| (arm units) over the actions that execute before the chunk arrives."""
    torch.manual_seed(1)
    req = request(delay)
    chunk = CheckpointPolicy(path, rtc_mode=mode).infer(req)
    assert chunk.shape == (CHUNK, ACTION_DIM) and np.isfinite(chunk).all()
    assert req.prefix is not None
    return float(np.abs(chunk[:delay] - req.prefix[:delay]).max())


def test_training_time_rtc_returns_the_committed_actions_exactly(checkpoint: Path) -> None:
    assert committed_error(checkpoint, "training", delay=3) < 1e-3


def test_guidance_pulls_the_committed_actions_towards_the_prefix(checkpoint: Path) -> None:
    ignored = committed_error(checkpoint, "off", delay=3)
    assert ignored > 5.0  # an untrained policy does not land on the prefix by itself
    assert committed_error(checkpoint, "guidance", delay=3) < ignored / 3


def test_training_mode_beyond_the_trained_delay_falls_back_to_guidance(checkpoint: Path) -> None:
    delay = MAX_DELAY + 2
    assert committed_error(checkpoint, "training", delay) == pytest.approx(committed_error(checkpoint, "guidance",
                                                                                           delay))  # fmt: skip


def test_unknown_mode_is_refused(checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="rtc_mode must be one of"):
        CheckpointPolicy(checkpoint, rtc_mode="auto")


def test_dtype_override_runs_the_checkpoint_in_int8(checkpoint: Path) -> None:
    """`vla deploy/serve/chunking-eval --dtype int8`: the float32 checkpoint's chunk, within int8's error."""
    chunks = []
    for dtype in (None, "int8"):
        torch.manual_seed(1)
        policy = CheckpointPolicy(checkpoint, rtc_mode="off", dtype=dtype)
        assert policy.policy.model.int8 == (dtype == "int8")
        chunks.append(policy.infer(request(0)))
    scale = np.abs(chunks[0]).max()
    assert 0 < np.abs(chunks[1] - chunks[0]).max() < 0.05 * scale
    with pytest.raises(ValueError, match="dtype 'fp4' is not one of"):
        CheckpointPolicy(checkpoint, dtype="fp4")


def test_compiled_checkpoint_compiles_while_loading(checkpoint: Path) -> None:
    """`--compile`: the compiles happen in the constructor's warm-up, not on the first real chunk."""
    from torch._dynamo.utils import counters

    before = counters["stats"]["unique_graphs"]
    policy = CheckpointPolicy(checkpoint, rtc_mode="guidance", compile=True, task="reach")
    compiled = counters["stats"]["unique_graphs"]
    assert compiled > before
    for delay in (0, 2):
        chunk = policy.infer(request(delay))
        assert np.isfinite(chunk).all()
    assert counters["stats"]["unique_graphs"] == compiled  # nothing left to compile
    longer = request(0)
    longer.task = "pick up the red cube and put it in the box"  # another token-length bucket: compiles once
    policy.infer(longer)
    again = counters["stats"]["unique_graphs"]
    assert again > compiled
    longer.task = "put the blue cube in the box, then the red one"  # same bucket: no compile
    policy.infer(longer)
    assert counters["stats"]["unique_graphs"] == again


def test_guidance_keeps_a_trained_checkpoint_on_its_own_plan_at_chunk_switches(so101_checkpoint: Path) -> None:
    """Real-time chunking with a checkpoint trained by `vla train` (not a test policy that inpaints itself): the
    next chunk, asked while the previous one still executes, continues that chunk's plan where it takes over,
    against naive asynchronous execution (the next chunk ignores the plan), in sim observations of the trained
    task. The deviation is |new chunk - previous plan| (arm units) at the first action the new chunk executes."""
    from vla.envs.suite import make_env

    execute, delay = 5, 2
    env = make_env("so101/reach", image_size=(32, 32))
    policies = {mode: CheckpointPolicy(so101_checkpoint, rtc_mode=mode) for mode in ("off", "guidance")}
    deviation: dict[str, list[float]] = {"off": [], "guidance": []}
    try:
        for seed in range(4):
            obs, _ = env.reset(seed=seed)
            state = np.asarray(obs["agent_pos"], np.float32)
            images = {cam: np.ascontiguousarray(img) for cam, img in obs["pixels"].items()}
            torch.manual_seed(seed)
            plan = policies["off"].infer(RequestObservation(state, images, env.task_description))
            left_over = plan[execute:]
            for mode, policy in policies.items():
                torch.manual_seed(100 + seed)
                chunk = policy.infer(RequestObservation(state, images, env.task_description, left_over, delay))
                deviation[mode].append(float(np.abs(chunk[delay] - left_over[delay]).max()))
    finally:
        env.close()
    naive, guided = np.mean(deviation["off"]), np.mean(deviation["guidance"])
    assert guided < 0.3 * naive, deviation  # measured 7.4 against 34.5 (arm units): 0.21
