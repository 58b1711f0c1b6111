"""`vla record`: run a scripted expert in an env and write its episodes to a LeRobot v3 dataset.

Each frame is (observation before the action, the action, the instruction as the task). Attempt i of a recording
uses seed `seed + i`; the next unused seed is kept in `meta/vla_record.json`, so `--resume` continues with fresh
initial states. With `workers` (`--workers N`), N processes record shards of a new dataset at once, worker k
taking seeds seed+k, seed+k+N, ..., and LeRobot's `aggregate_datasets` joins them at the end (or when stopped),
worker 0's episodes first. Failed expert episodes are dropped unless `keep_failed`. At the end the dataset's
statistics are recomputed exactly over all episodes (`vla.datasets.stats`). The dataset is committed (made
loadable) every `commit_every` seconds and at the end; a killed recording loses the episodes since its last commit,
and `--resume` rolls it back to that commit (`vla.datasets.writer`; their seeds are not reused). Rollouts
(`vla.envs.rollout`) use seeds from `EVAL_SEED` up, disjoint from these.

Frames are stored as H.264 video (LeRobot's `yuv420p`, CRF 30), or with `use_videos=False` exactly, as PNG images
in the parquet data (about 20x larger). Video is lossy: at 96 px its half-resolution colour erased Meta-World's 2-3
pixel goal marker. Exact frames are not the default because no policy has yet done better for them: `make demo`
recorded that way got 70/100 against 81-84/100 from video (docs/learning.md).

Several envs (a multi-task dataset, e.g. six Meta-World tasks) record into one dataset when their features agree:
`episodes` successful episodes each, taken in turns (one attempt per env per round), so a recording stopped early
holds about as many of each. Attempts draw seeds from one counter, in order. `--resume` appends `episodes` more of
each; `top_up` (`--resume --top-up`) records until each env holds `episodes`, which evens out a stopped multi-task
recording. For that `meta/vla_record.json` also keeps which env each saved episode came from (instructions cannot
tell: an SO-101 task draws one of several phrasings), cut back with the episodes a resume rolls back, and the noise
settings, so a resume with other settings is refused.

`action_noise` (in the env's action units: joint degrees on the SO-101, hand-motion units on Meta-World, where 1 is
1 cm a step) perturbs what the arm is sent, not what is recorded: the executed action is the expert's plus slowly
varying noise on each arm joint or hand axis (`ActionNoise`), while each frame's action stays the expert's. The
arm then drifts off the expert's path and the expert's next actions bring it back (and, when a release misses, the
expert plans again), so the demonstrations show corrections from the states a policy's own small errors lead to
(DART: Laskey et al., 2017).

`start_noise` spreads where the arm starts (SO-101: joint degrees, default 4; Meta-World: cm on each hand axis,
default 0, since Meta-World starts every episode from one hand position). From one start the hand's position along
the expert's path gives the goal away, a shortcut a policy can learn instead of looking (on Meta-World reach alone
it did not matter: 79/100 spread, 40/50 one start). Rollouts keep each env's default start.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    per_env: dict[str, dict[str, int]] = field(default_factory=dict)  # env -> saved, attempted, successes


def env_names(spec: str | Sequence[str]) -> list[str]:
    """`"a,b"` or `["a", "b"]` -> `["a", "b"]`; a name listed twice is an error."""
    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else [n.strip() for n in spec]
    names = [n for n in names if n]
    if not names:
        raise ValueError("no env given")
    if len(set(names)) != len(names):
        raise ValueError(f"an env is listed twice in {','.join(names)}")
    return names


def default_repo_id(names: list[str]) -> str:
    """local/so101_stack for one env, local/metaworld_6tasks for six."""
    if len(names) == 1:
        return "local/" + names[0].replace("/", "_")
    return f"local/{names[0].partition('/')[0]}_{len(names)}tasks"


def _check_noise(action_noise: float, names: list[str], envs: list[Any]) -> None:
    """Noise is in each env's action units: joint degrees on the SO-101, hand-motion units on Meta-World, where an
    action in [-1, 1] moves the hand up to 1 cm a step, so noise of `noise_limit` (1) or more would swamp the expert."""
    if action_noise < 0:
        raise ValueError(f"action noise must be >= 0, not {action_noise}")
    for name, env in zip(names, envs, strict=True):
        if action_noise >= getattr(env, "noise_limit", np.inf):
            raise ValueError(f"action noise {action_noise} is in {env.noise_unit} for {name}, whose actions lie "
                             f"in [-1, 1]: it must be below {env.noise_limit} (0.1 keeps its expert succeeding)")


def _same_features(names: list[str], envs: list[Any]) -> dict[str, dict]:
    features = dataset_features(envs[0])
    fps = envs[0].metadata["render_fps"]
    for name, env in zip(names[1:], envs[1:], strict=True):
        other = dataset_features(env)
        if other != features or env.metadata["render_fps"] != fps:
            diff = sorted(k for k in features.keys() | other.keys() if features.get(k) != other.get(k))
            what = f"features {diff}" if diff else f"fps {env.metadata['render_fps']} against {fps}"
            raise ValueError(f"{name} cannot share a dataset with {names[0]}: their {what} differ; record them "
                             "into separate datasets")  # fmt: skip
    return features


def record(
    env_name: str | Sequence[str],
    episodes: int,
    out: str | Path,
    resume: bool = False,
    image_size: tuple[int, int] = (96, 96),
    cameras: Sequence[str] | None = None,
    use_videos: bool = True,
    keep_failed: bool = False,
    seed: int = 0,
    repo_id: str | None = None,
    progress: bool = True,
    commit_every: float = 30.0,
    action_noise: float = 0.0,
    start_noise: float | None = None,
    top_up: bool = False,
    workers: int = 1,
    seed_step: int = 1,
    exact_stats: bool = True,
) -> RecordSummary:
    from tqdm import tqdm

    if top_up and not resume:
        raise ValueError("top_up counts the episodes already in a dataset: it needs resume (--resume)")
    out = Path(out)
    names = env_names(env_name)
    if workers > 1:
        if resume:
            raise ValueError("recording with several workers writes a new dataset; append to an existing one with "
                             "--resume and one worker (--workers 1)")  # fmt: skip
        return _record_in_parallel(names, episodes, out, workers, seed, progress, dict(
            image_size=image_size, cameras=cameras, use_videos=use_videos, keep_failed=keep_failed, repo_id=repo_id,
            commit_every=commit_every, action_noise=action_noise, start_noise=start_noise))  # fmt: skip
    if workers < 1 or seed_step < 1:
        raise ValueError(f"workers ({workers}) and seed_step ({seed_step}) must be at least 1")
    label = ",".join(names)
    state_path = out / RECORD_META
    next_seed = seed
    settings = {"action_noise": action_noise, "start_noise": start_noise}
    origins: list[int] | None = []  # index into `names` of each saved episode; None where an older record lacks it
    if resume and state_path.is_file():
        state = json.loads(state_path.read_text())
        if state.get("env") != label:
            raise ValueError(f"{out} was recorded from {state.get('env')}, not {label}; use another --out")
        _check_same_settings(out, state, settings)
        next_seed = int(state["next_seed"])
        origins = state.get("episode_env")
    repo_id = repo_id or default_repo_id(names)
    start = time.perf_counter()
    counts = {name: {"saved": 0, "attempted": 0, "successes": 0} for name in names}
    frames = 0
    with contextlib.ExitStack() as owned:  # closes the writer, then the envs, however recording ends
        envs: list[Any] = []
        options: dict[str, Any] = {} if start_noise is None else {"start_noise": start_noise}
        if cameras is not None:
            options["cameras"] = tuple(cameras)
        for name in names:
            envs.append(make_env(name, image_size=image_size, **options))
            owned.callback(envs[-1].close)
        features = _same_features(names, envs)
        experts = [make_expert(env) for env in envs]
        _check_noise(action_noise, names, envs)
        owned.enter_context(sigterm_as_interrupt())
        writer = owned.enter_context(EpisodeWriter(
            out, repo_id, fps=int(envs[0].metadata["render_fps"]), features=features,
            robot_type=getattr(envs[0], "robot_type", None), resume=resume, use_videos=use_videos,
            commit_every=commit_every,
        ))  # fmt: skip
        rolled_back = writer.rolled_back
        if origins is not None:
            origins = origins[: writer.num_episodes]  # the episodes a rollback dropped were the last ones saved
            if len(origins) < writer.num_episodes:
                origins = None
        if origins is None and len(names) == 1:  # one env: every episode is its own, whoever recorded them
            origins = [0] * writer.num_episodes
        if top_up and origins is None:
            raise ValueError(f"{out} was recorded before `vla record` kept which env each episode came from, so "
                             "--top-up cannot count them; append with --resume and a smaller --episodes")  # fmt: skip
        have = [origins.count(i) for i in range(len(names))] if top_up and origins is not None else [0] * len(names)
        wanted = {name: max(0, episodes - n) for name, n in zip(names, have, strict=True)}
        bar = tqdm(total=sum(wanted.values()), desc=f"recording {label}", unit="ep", disable=not progress)
        try:
            while any(counts[name]["saved"] < wanted[name] for name in names):
                for index, (name, env, expert) in enumerate(zip(names, envs, experts, strict=True)):
                    count = counts[name]
                    if count["saved"] >= wanted[name]:
                        continue
                    count["attempted"] += 1
                    success = _play(env, expert, next_seed, writer, action_noise)
                    next_seed += seed_step
                    count["successes"] += success
                    if success or keep_failed:
                        frames += writer.pending
                        writer.save()
                        count["saved"] += 1
                        if origins is not None:
                            origins.append(index)
                        bar.update(1)
                    else:
                        writer.discard()
                    kept = {} if origins is None else {"episode_env": origins}
                    write_json_atomic(state_path, {"env": label, "next_seed": next_seed, **settings, **kept})
                    bar.set_postfix(expert_success="{}/{}".format(*_totals(counts, "successes", "attempted")))
        finally:
            bar.close()
    saved, attempted, successes = _totals(counts, "saved", "attempted", "successes")
    if exact_stats and (saved or resume):
        # LeRobot 0.4.4 averages per-episode quantiles and image deviations; recompute them over all the data
        write_stats(compute_stats([out], progress=False), out / "meta" / "stats.json")
    return RecordSummary(saved, attempted, successes, frames, time.perf_counter() - start, out, rolled_back,
                         per_env=counts if len(names) > 1 else {})  # fmt: skip


def _record_in_parallel(names: list[str], episodes: int, out: Path, workers: int, seed: int, progress: bool,
                        options: dict[str, Any]) -> RecordSummary:
    """`workers` processes record shards of the dataset beside `out` (worker k plays seeds seed+k, seed+k+workers,
    ...), then LeRobot's `aggregate_datasets` joins them into `out`, shard 0's episodes first. On Ctrl-C or SIGTERM
    each worker commits what it saved and the shards are joined all the same, then KeyboardInterrupt is raised."""
    import multiprocessing
    import shutil
    import signal

    from lerobot.datasets import aggregate_datasets
    from tqdm import tqdm

    from vla.datasets.writer import rollback_to_commit, total_episodes, write_commit

    if out.exists():
        raise FileExistsError(f"{out} already exists; record into a new --out, or append with --resume and one worker")
    shards = out.with_name(f".{out.name}.shards")
    if shards.exists():
        raise FileExistsError(f"{shards} holds the shards of a parallel recording that was killed before they were "
                              f"joined; delete it to record again")  # fmt: skip
    workers = min(workers, episodes) if episodes > 0 else 1
    label = ",".join(names)
    repo_id = options["repo_id"] or default_repo_id(names)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked OpenGL or torch state
    jobs = []
    for k in range(workers):
        shard = shards / f"{k:02d}"
        # each shard's exact statistics would be thrown away: they are computed once, over the joined dataset
        kwargs = dict(options, env_name=names, episodes=episodes // workers + (k < episodes % workers), out=shard,
                      seed=seed + k, seed_step=workers, repo_id=repo_id, progress=False, exact_stats=False)  # fmt: skip
        jobs.append((shard, context.Process(target=_shard_worker, args=(kwargs,), name=f"record-{k}")))
    start = time.perf_counter()
    bar = tqdm(total=episodes * len(names), desc=f"recording {label} ({workers} workers)", unit="ep",
               disable=not progress)  # fmt: skip
    interrupted = False
    try:
        with sigterm_as_interrupt():
            try:
                for _, job in jobs:
                    job.start()
                while any(job.is_alive() for _, job in jobs):
                    bar.n = sum(len(_record_state(shard).get("episode_env", [])) for shard, _ in jobs)
                    bar.refresh()
                    time.sleep(0.5)
            except KeyboardInterrupt:
                interrupted = True
                for _, job in jobs:  # each commits what it saved (the workers ignore the terminal's Ctrl-C)
                    if job.is_alive() and job.pid is not None:
                        os.kill(job.pid, signal.SIGTERM)
            for _, job in jobs:
                while job.pid is not None and job.exitcode is None:
                    with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C does not abandon the join
                        job.join()
    finally:
        bar.close()
    failed = [f"worker {k} (exit {job.exitcode})" for k, (_, job) in enumerate(jobs) if job.exitcode not in (0, None)]
    states = {shard: _record_state(shard) for shard, _ in jobs}
    for shard in states:
        rollback_to_commit(shard)  # a worker killed outright keeps what it had committed
    full = [shard for shard in states if total_episodes(shard) > 0]
    if full:
        aggregate_datasets([repo_id] * len(full), repo_id, roots=full, aggr_root=out)
        # the episodes each shard kept after its rollback, in the order they were joined
        origins = [i for shard in full for i in states[shard].get("episode_env", [])[: total_episodes(shard)]]
        write_json_atomic(out / RECORD_META, {
            "env": label, "next_seed": max(int(state.get("next_seed", seed)) for state in states.values()),
            "action_noise": options["action_noise"], "start_noise": options["start_noise"], "episode_env": origins,
        })  # fmt: skip
        write_stats(compute_stats([out], progress=False), out / "meta" / "stats.json")
        write_commit(out, total_episodes(out))
    shutil.rmtree(shards, ignore_errors=True)
    if failed and not interrupted:
        kept = f"the episodes the others saved are in {out}" if full else "nothing was saved"
        raise RuntimeError(f"{', '.join(failed)} of the parallel recording failed (its error is printed above); "
                           f"{kept}")  # fmt: skip
    summaries: list[dict[str, Any]] = [state["summary"] for state in states.values() if "summary" in state]
    if interrupted or len(summaries) < len(states):
        raise KeyboardInterrupt
    per_env: dict[str, dict[str, int]] = {name: {"saved": 0, "attempted": 0, "successes": 0} for name in names}
    for summary in summaries:
        for name, count in summary["counts"].items():
            for key, value in count.items():
                per_env[name][key] += value
    saved, attempted, successes = _totals(per_env, "saved", "attempted", "successes")
    return RecordSummary(saved, attempted, successes, sum(s["frames"] for s in summaries), time.perf_counter() - start,
                         out, per_env=per_env if len(names) > 1 else {})  # fmt: skip


def _record_state(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / RECORD_META).read_text())
    except (OSError, ValueError):  # not written yet, or being replaced
        return {}


def _shard_worker(kwargs: dict[str, Any]) -> None:
    """One worker of `_record_in_parallel`: Ctrl-C in the terminal is left to the parent, which stops the worker
    with SIGTERM; its counts go into the shard's record state for the parent to add up."""
    import multiprocessing
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a spawned process defaults to spawning its own children, and LeRobot encodes each episode's cameras in a process
    # pool: a fresh interpreter per camera per episode (8 s an episode on 2 cores) where `vla record` alone forks
    multiprocessing.set_start_method("fork", force=True)
    try:
        summary = record(**kwargs)
    except KeyboardInterrupt:  # the parent's SIGTERM: what was saved is committed
        return
    counts = summary.per_env or {kwargs["env_name"][0]: {
        "saved": summary.saved, "attempted": summary.attempted, "successes": summary.successes}}  # fmt: skip
    path = Path(kwargs["out"]) / RECORD_META
    write_json_atomic(path, {**json.loads(path.read_text()), "summary": {"counts": counts, "frames": summary.frames}})


def _check_same_settings(out: Path, state: dict[str, Any], settings: dict[str, float | None]) -> None:
    """A resumed recording must perturb and spread like the one it appends to (files from before these keys were
    stored are taken as they are)."""
    for key, now in settings.items():
        if key in state and state[key] != now:
            flag = "--" + key.replace("_", "-")
            was = "the default" if state[key] is None else state[key]
            raise ValueError(f"{out} was recorded with {flag} {was}, not {'the default' if now is None else now}; "
                             f"resume with {flag} {was} or record into another --out")  # fmt: skip


class ActionNoise:
    """Ornstein-Uhlenbeck noise on every action dimension but the last (the gripper): stationary standard deviation
    `std` in the action's units, correlation time `ticks`, so it drifts like a slow error rather than jitters (which
    the servos would filter out)."""

    def __init__(self, dims: int, std: float, seed: int, ticks: float = 10.0):
        self.rng = np.random.default_rng([seed, 0x4E015E])
        self.decay = 1.0 - 1.0 / ticks
        self.kick = std * np.sqrt(1.0 - self.decay**2)  # keeps the deviation at `std`
        self.value = np.zeros(dims, np.float32)
        self.value[:-1] = self.rng.normal(0.0, std, dims - 1)

    def __call__(self, action: np.ndarray) -> np.ndarray:
        self.value[:-1] = self.decay * self.value[:-1] + self.kick * self.rng.normal(size=len(self.value) - 1)
        return (action + self.value).astype(np.float32)


def _totals(counts: dict[str, dict[str, int]], *keys: str) -> tuple[int, ...]:
    return tuple(sum(c[k] for c in counts.values()) for k in keys)


def _play(env: Any, expert: Any, seed: int, writer: EpisodeWriter, action_noise: float = 0.0) -> bool:
    """One expert episode from `seed`, its frames added to `writer` (not saved); whether the expert succeeded.
    With `action_noise`, the env is sent the expert's action perturbed by `ActionNoise`; frames keep the expert's."""
    obs, info = env.reset(seed=seed)
    expert.reset()
    perturb = ActionNoise(env.action_space.shape[0], action_noise, seed) if action_noise > 0 else None
    done = False
    while not done:
        action = np.asarray(expert.act(), dtype=np.float32)
        frame = {f"observation.images.{cam}": img for cam, img in obs["pixels"].items()}
        frame["observation.state"] = np.asarray(obs["agent_pos"], dtype=np.float32)
        frame["action"] = action
        frame["task"] = env.task_description
        writer.add(frame)
        obs, _, terminated, truncated, info = env.step(action if perturb is None else perturb(action))
        done = terminated or truncated
    return bool(info["is_success"])
