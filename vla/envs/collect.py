"""`vla record`: run a scripted expert in an env and write its episodes to a LeRobot v3 dataset.

Each frame is (observation before the action, the action, the instruction as the task). Episode i of a recording
uses seed `seed + i`; the next unused seed is kept in `meta/vla_record.json`, so `--resume` continues with fresh
initial states. Failed expert episodes are dropped unless `keep_failed`. At the end the dataset's statistics are
recomputed exactly over all episodes (`vla.datasets.stats`). The dataset is committed (made loadable) every
`commit_every` seconds and at the end; a killed recording loses the episodes since its last commit, and `--resume`
rolls it back to that commit (`vla.datasets.writer`; their seeds are not reused). Rollouts (`vla.envs.rollout`)
use seeds from `EVAL_SEED` up, disjoint from these.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla.datasets.stats import compute_stats, write_stats
from vla.datasets.writer import EpisodeWriter
from vla.envs.suite import dataset_features, make_env, make_expert
from vla.files import write_json_atomic
from vla.signals import sigterm_as_interrupt

RECORD_META = "meta/vla_record.json"


@dataclass
class RecordSummary:
    saved: int
    attempted: int
    successes: int
    frames: int
    seconds: float
    root: Path
    rolled_back: int = 0  # episodes a killed recording saved after its last commit, dropped on --resume


def record(
    env_name: str,
    episodes: int,
    out: str | Path,
    resume: bool = False,
    image_size: tuple[int, int] = (96, 96),
    use_videos: bool = True,
    keep_failed: bool = False,
    seed: int = 0,
    repo_id: str | None = None,
    progress: bool = True,
    commit_every: float = 30.0,
) -> RecordSummary:
    from tqdm import tqdm

    out = Path(out)
    env = make_env(env_name, image_size=image_size)
    expert = make_expert(env)
    state_path = out / RECORD_META
    next_seed = seed
    if resume and state_path.is_file():
        state = json.loads(state_path.read_text())
        if state.get("env") != env_name:
            raise ValueError(f"{out} was recorded from {state.get('env')}, not {env_name}; use another --out")
        next_seed = int(state["next_seed"])
    repo_id = repo_id or f"local/{env_name.replace('/', '_')}"
    start = time.perf_counter()
    saved = attempted = successes = frames = 0
    with sigterm_as_interrupt(), EpisodeWriter(
        out, repo_id, fps=int(env.metadata["render_fps"]), features=dataset_features(env),
        robot_type=getattr(env, "robot_type", None), resume=resume, use_videos=use_videos, commit_every=commit_every,
    ) as writer:  # fmt: skip
        rolled_back = writer.rolled_back
        bar = tqdm(total=episodes, desc=f"recording {env_name}", unit="ep", disable=not progress)
        try:
            while saved < episodes:
                obs, info = env.reset(seed=next_seed)
                expert.reset()
                next_seed += 1
                attempted += 1
                done = False
                while not done:
                    action = np.asarray(expert.act(), dtype=np.float32)
                    frame = {f"observation.images.{cam}": img for cam, img in obs["pixels"].items()}
                    frame["observation.state"] = np.asarray(obs["agent_pos"], dtype=np.float32)
                    frame["action"] = action
                    frame["task"] = env.task_description
                    writer.add(frame)
                    obs, _, terminated, truncated, info = env.step(action)
                    done = terminated or truncated
                successes += bool(info["is_success"])
                if info["is_success"] or keep_failed:
                    frames += writer.pending
                    writer.save()
                    saved += 1
                    bar.update(1)
                else:
                    writer.discard()
                write_json_atomic(state_path, {"env": env_name, "next_seed": next_seed})
                bar.set_postfix(expert_success=f"{successes}/{attempted}")
        finally:
            bar.close()
            env.close()
    if saved or resume:
        # LeRobot 0.4.4 averages per-episode quantiles and image deviations; recompute them over all the data
        write_stats(compute_stats([out], progress=False), out / "meta" / "stats.json")
    return RecordSummary(saved, attempted, successes, frames, time.perf_counter() - start, out, rolled_back)
