"""`vla rollout`: evaluate a checkpoint (or the scripted expert) in an env and report success rates.

Episodes run in waves of `n_envs` envs stepped in lockstep, so the policy sees one batch per tick (its action
queue is shared by the batch, so a wave starts and ends together; an env that finishes early idles). Seeds start
at `EVAL_SEED`, far from the recording seeds (0 up), so rollouts never replay a training initial state. Reports
success with a 95% Wilson interval overall and per instruction, writes `results.json` and mp4 videos of the first
episodes (front camera).

Each wave seeds the policy's sampling from its first episode's seed (`Actor.reset`), so a rollout is
reproducible. With `workers` > 1, that many processes each play a contiguous share of the waves (the same
episodes, seeds and sampling as one process, so the same results), each with its own copy of the policy loaded
from a loader such as `functools.partial(CheckpointActor, path)`: MuJoCo's EGL contexts belong to the thread that
made them and software rendering takes half a CPU rollout's time, so processes are how a rollout uses more cores.
Interrupted (Ctrl-C, SIGTERM), a rollout writes the episodes it finished to `results.json`, marked "interrupted".
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from vla.envs.suite import make_env, make_expert
from vla.signals import sigterm_as_interrupt

EVAL_SEED = 1_000_000


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a success rate."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def write_mp4(path: Path, frames: list[np.ndarray], fps: float) -> None:
    import av

    av.logging.set_libav_level(av.logging.ERROR)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        for frame in frames:
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[: h - h % 2, : w - w % 2]), format="rgb24")
            out.mux(stream.encode(image))
        out.mux(stream.encode())


def task_target(env: Any) -> str | None:
    """The object an episode's instruction names, where the task has one (pick-color's cube colour)."""
    target = getattr(getattr(env, "task_spec", None), "target", None)
    return str(target) if target is not None else None


def rates_by(records: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """Success rate per value of `key` (instruction, target), with episodes and a 95% interval."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        if r.get(key) is not None:
            groups[str(r[key])].append(bool(r["success"]))
    return {k: {"episodes": len(v), "success_rate": sum(v) / len(v), "ci95": wilson(sum(v), len(v))}
            for k, v in groups.items()}  # fmt: skip


@runtime_checkable
class Actor(Protocol):
    """What `rollout` plays: a policy acting on a batch of env observations (`vla.runtime.checkpoint.
    CheckpointActor` loads any LeRobot checkpoint as one). `name` is what the results call it; `reset(seed)` starts
    a wave of episodes, seeding the policy's own sampling so that a wave plays the same whichever process plays it."""

    name: str

    def reset(self, seed: int | None = None) -> None: ...
    def act(self, observations: list[dict[str, Any]], tasks: list[str]) -> np.ndarray: ...


# a picklable function of no arguments that loads an actor (`functools.partial(CheckpointActor, path)`): what each
# worker process of a parallel rollout calls to get its own copy of the policy
ActorLoader = Callable[[], Actor]
Plan = list[tuple[int, "dict[str, str] | None"]]  # each episode's seed and reset options, in episode order
Report = Callable[[list[dict[str, Any]], list[str]], None]  # a wave's records and the videos it wrote


@dataclass
class RolloutResult:
    env: str
    policy: str
    episodes: int
    successes: int
    success_rate: float
    ci95: tuple[float, float]
    per_instruction: dict[str, dict[str, Any]]
    seeds: tuple[int, int]
    mean_steps: float
    seconds: float
    videos: list[str]
    per_target: dict[str, dict[str, Any]] = field(default_factory=dict)  # by the named object, where tasks name one
    wrong_object: int | None = None  # episodes that lifted an object the instruction did not name


def env_views(cameras: dict[str, tuple[int, int]] | None) -> dict[str, Any]:
    """The `make_env` arguments that render what a policy was trained on: its cameras by name, each (height,
    width); None (the expert, or an actor that does not say): the env's own cameras and size."""
    if cameras is None:
        return {}
    sizes = set(cameras.values())
    if len(sizes) > 1:
        raise ValueError(f"the checkpoint's cameras differ in size ({cameras}); a simulated env renders every camera "
                         "at one size")  # fmt: skip
    return {"cameras": tuple(cameras), **({"image_size": sizes.pop()} if sizes else {})}


def rollout(
    policy: Actor | ActorLoader | Literal["expert"],
    env_name: str,
    episodes: int = 50,
    n_envs: int = 4,
    out: str | Path = "outputs/rollout",
    seed: int = EVAL_SEED,
    videos: int = 4,
    progress: bool = True,
    targets: tuple[str, ...] = (),
    workers: int = 1,
) -> RolloutResult:
    """Roll `policy` (an `Actor`, a loader of one, or "expert": the env's scripted expert) out for `episodes`
    episodes from seed `seed` on, in waves of `n_envs` envs; with `workers` > 1, in that many processes at once,
    each loading its own actor (`policy` must then be a loader or "expert"). With `targets` (a language probe),
    each scene is played once per target, naming that object (episode k: seed `seed + k // len(targets)`, target
    `targets[k % len(targets)]`), so the same layout is asked for each object in turn."""
    from tqdm import tqdm

    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan: Plan = [(seed + k // len(targets), {"target": targets[k % len(targets)]}) if targets else (seed + k, None)
                  for k in range(episodes)]  # fmt: skip
    records: list[dict[str, Any]] = []
    video_paths: list[str] = []
    name = "expert"
    bar = tqdm(total=episodes, desc=f"rollout {env_name}", unit="ep", disable=not progress)

    def report(played: list[dict[str, Any]], paths: list[str]) -> None:
        records.extend(played)
        video_paths.extend(paths)
        bar.update(len(played))
        bar.set_postfix(success=f"{sum(r['success'] for r in records)}/{len(records)}")

    start = time.perf_counter()
    try:
        with sigterm_as_interrupt():
            if workers > 1 and len(plan) > 1:
                name = _play_in_workers(policy, env_name, plan, n_envs, out, videos, workers, report)
            else:
                actor = _load(policy)
                name = "expert" if actor is None else actor.name
                _play(actor, env_name, plan, 0, n_envs, out, videos, report)
    except KeyboardInterrupt:
        if records:
            _write_results(out, env_name, name, records, video_paths, time.perf_counter() - start, interrupted=True)
        raise
    finally:
        bar.close()
    return _write_results(out, env_name, name, records, video_paths, time.perf_counter() - start)


def _load(policy: Actor | ActorLoader | Literal["expert"]) -> Actor | None:
    """The actor `policy` is or loads; None for the scripted expert."""
    if policy == "expert":
        return None
    return policy if isinstance(policy, Actor) else policy()


def _write_results(out: Path, env_name: str, policy: str, records: list[dict[str, Any]], videos: list[str],
                   seconds: float, interrupted: bool = False) -> RolloutResult:  # fmt: skip
    """The result of the episodes played (in episode order, whatever order they finished in), saved with every
    episode's record to `out/results.json`."""
    records = sorted(records, key=lambda r: r["episode"])
    wins = sum(r["success"] for r in records)
    result = RolloutResult(
        env=env_name, policy=policy, episodes=len(records), successes=wins,
        success_rate=wins / len(records), ci95=wilson(wins, len(records)),
        per_instruction=rates_by(records, "instruction"), per_target=rates_by(records, "target"),
        wrong_object=sum(bool(r["wrong_object"]) for r in records)
        if any(r["wrong_object"] is not None for r in records) else None,
        seeds=(records[0]["seed"], records[-1]["seed"]), mean_steps=float(np.mean([r["steps"] for r in records])),
        seconds=seconds, videos=sorted(videos),
    )  # fmt: skip
    extra = {"interrupted": True} if interrupted else {}
    (out / "results.json").write_text(json.dumps({**asdict(result), **extra, "episodes_detail": records}, indent=2))
    return result


def _play(actor: Actor | None, env_name: str, plan: Plan, first: int, n_envs: int, out: Path, videos: int,
          report: Report) -> None:  # fmt: skip
    """Play `plan` (episodes `first`, `first` + 1, ...) in waves of `n_envs` envs, filming episodes below
    `videos`; `report` gets each wave's records and videos."""
    views = env_views(getattr(actor, "cameras", None))
    envs = [make_env(env_name, **views) for _ in range(max(1, min(n_envs, len(plan))))]
    experts = [make_expert(e) for e in envs] if actor is None else None
    try:
        for offset in range(0, len(plan), len(envs)):
            wave, index = plan[offset: offset + len(envs)], first + offset
            played, clips = _play_wave(envs[: len(wave)], [s for s, _ in wave], [o for _, o in wave], actor,
                                       experts, filmed=max(0, videos - index))  # fmt: skip
            for i, record in enumerate(played):
                record["episode"] = index + i
            paths = []
            for i, clip in clips.items():
                path = out / f"episode_{index + i:03d}_{'success' if played[i]['success'] else 'failure'}.mp4"
                write_mp4(path, clip, envs[i].metadata["render_fps"])
                paths.append(str(path))
            report(played, paths)
    finally:
        for e in envs:
            e.close()


def _play_in_workers(policy: Actor | ActorLoader | Literal["expert"], env_name: str, plan: Plan, n_envs: int,
                     out: Path, videos: int, workers: int, report: Report) -> str:  # fmt: skip
    """`_play` in `workers` spawned processes, worker k on the k-th contiguous share of `plan`, each with torch
    threads for its share of the cores; their waves reach `report` as they finish; -> the actor's name. A worker
    that fails, dies or stops early stops the others and raises here (KeyboardInterrupt for a worker's Ctrl-C);
    on Ctrl-C here they are stopped too."""
    import multiprocessing
    import queue

    if isinstance(policy, Actor):
        raise ValueError("a rollout in several worker processes needs a loader of the policy, which each worker "
                         "calls (functools.partial(CheckpointActor, path)), not an actor already loaded")
    n_envs = max(1, min(n_envs, len(plan)))
    waves = -(-len(plan) // n_envs)
    workers = min(workers, waves)
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    # whole waves to each worker, so every wave (and its seeded sampling) is the one a single process plays
    bounds = [min(len(plan), n_envs * (waves * k // workers)) for k in range(workers + 1)]
    context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked OpenGL or torch state
    messages = context.Queue()
    jobs = [context.Process(target=_worker, name=f"rollout-{k}", daemon=True, args=(
        k, policy, env_name, plan[bounds[k]: bounds[k + 1]], bounds[k], n_envs, out, videos, threads, messages))
        for k in range(workers)]  # fmt: skip
    name, done = "expert", set[int]()
    try:
        for job in jobs:
            job.start()
        while len(done) < workers:
            # A worker that had ended before this wait had put all its messages: if none comes, it sent no "done".
            ended = [job for k, job in enumerate(jobs) if job.exitcode is not None and k not in done]
            try:
                k, kind, payload = messages.get(timeout=1.0)
            except queue.Empty:
                if ended:
                    raise RuntimeError(f"rollout worker {ended[0].name} ended (exit code {ended[0].exitcode}) "
                                       f"before finishing its episodes") from None  # fmt: skip
                continue
            if kind == "error":
                raise RuntimeError(f"rollout worker {k} failed:\n{payload}")
            if kind == "interrupted":
                raise KeyboardInterrupt(f"rollout worker {k} was interrupted")
            if kind == "actor":
                name = payload
            elif kind == "wave":
                report(*payload)
            else:
                done.add(k)
        return name
    finally:
        for job in jobs:
            if job.is_alive():
                job.terminate()
        for job in jobs:
            job.join()


def _worker(k: int, policy: ActorLoader | Literal["expert"], env_name: str, plan: Plan, first: int, n_envs: int,
            out: Path, videos: int, threads: int, messages: Any) -> None:  # fmt: skip
    """Worker k of `_play_in_workers`; it messages (k, kind, payload): ("actor", name), ("wave", (records, videos))
    per wave, then ("done", None); or ("error", traceback) or ("interrupted", None) (the terminal's Ctrl-C reaches
    the workers too)."""
    import traceback

    try:
        if policy != "expert":
            import torch

            torch.set_num_threads(threads)
        actor = _load(policy)
        messages.put((k, "actor", "expert" if actor is None else actor.name))
        _play(actor, env_name, plan, first, n_envs, out, videos, lambda *wave: messages.put((k, "wave", wave)))
        messages.put((k, "done", None))
    except KeyboardInterrupt:
        messages.put((k, "interrupted", None))
    except BaseException:
        messages.put((k, "error", traceback.format_exc()))


def _play_wave(envs: list[Any], seeds: list[int], options: list[dict[str, str] | None], actor: Actor | None,
               experts: list[Any] | None, filmed: int) -> tuple[list[dict[str, Any]], dict[int, list[np.ndarray]]]:
    """One episode in each env, stepped together (the actor acts on the whole batch at once) -> a record per
    episode and the frames of the first `filmed` envs."""
    obs = [env.reset(seed=s, options=o)[0] for env, s, o in zip(envs, seeds, options, strict=True)]
    tasks = [env.task_description for env in envs]
    for expert in experts or []:
        expert.reset()
    if actor is not None:
        actor.reset(seed=seeds[0])
    n = len(envs)
    done, success, steps, returns = [False] * n, [False] * n, [0] * n, [0.0] * n
    wrong: list[bool | None] = [None] * n
    clips: dict[int, list[np.ndarray]] = {i: [envs[i].render()] for i in range(min(filmed, n))}
    while not all(done):
        if actor is not None:
            actions: Any = actor.act(obs, tasks)
        else:
            assert experts is not None
            actions = [None if done[i] else experts[i].act() for i in range(n)]
        for i, env in enumerate(envs):
            if done[i]:
                continue
            obs[i], reward, terminated, truncated, info = env.step(actions[i])
            steps[i] += 1
            returns[i] += float(reward)
            success[i] = success[i] or bool(info["is_success"])
            if "wrong_object" in info:
                wrong[i] = bool(info["wrong_object"])
            done[i] = terminated or truncated
            if i in clips:
                clips[i].append(env.render())
    records = [{"seed": seeds[i], "instruction": tasks[i], "success": success[i], "steps": steps[i],
                "return": returns[i], "target": task_target(envs[i]), "wrong_object": wrong[i]}
               for i in range(n)]  # fmt: skip
    return records, clips


def task_out(out: str | Path, env_name: str) -> Path:
    """Where `rollout_tasks` writes `env_name`'s rollout: `out/<suite>_<task>`."""
    return Path(out) / env_name.replace("/", "_")


def rollout_tasks(policy: Actor | ActorLoader | Literal["expert"], env_names: list[str], episodes: int = 50,
                  n_envs: int = 4, out: str | Path = "outputs/rollout", **kwargs: Any) -> list[RolloutResult]:
    """`rollout` on each env in turn (a multi-task policy), each into `task_out(out, env)`; `out/summary.json`
    holds every env's success and their mean (`summarize`). A loader is called once per env (each worker's)."""
    results = [rollout(policy, name, episodes, n_envs, task_out(out, name), **kwargs) for name in env_names]
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "summary.json").write_text(json.dumps(summarize(results), indent=2))
    return results


def summarize(results: list[RolloutResult]) -> dict[str, Any]:
    """The mean over envs of their success rates, the pooled episodes with their 95% interval, and each env's."""
    wins, total = sum(r.successes for r in results), sum(r.episodes for r in results)
    return {"mean_success_rate": float(np.mean([r.success_rate for r in results])), "successes": wins,
            "episodes": total, "ci95": wilson(wins, total),
            "per_env": {r.env: {"successes": r.successes, "episodes": r.episodes, "ci95": r.ci95} for r in results}}


def format_summary(results: list[RolloutResult]) -> str:
    s = summarize(results)
    low, high = s["ci95"]
    return (f"mean success over {len(results)} envs: {s['mean_success_rate']:.1%} ({s['successes']}/{s['episodes']} "
            f"episodes pooled, 95% CI {low:.0%}-{high:.0%})")


def format_result(r: RolloutResult) -> str:
    lines = [
        f"{r.env}  policy={r.policy}",
        f"  success {r.successes}/{r.episodes} = {r.success_rate:.0%}  (95% CI {r.ci95[0]:.0%}-{r.ci95[1]:.0%}), "
        f"seeds {r.seeds[0]}-{r.seeds[1]}, {r.mean_steps:.0f} steps/episode, {r.seconds:.0f} s",
    ]
    if r.wrong_object is not None:
        lines.append(f"  lifted a cube the instruction did not name: {r.wrong_object}/{r.episodes} episodes")
    for name, stats in sorted(r.per_target.items()):
        low, high = stats["ci95"]
        lines.append(f'    {stats["success_rate"]:>4.0%} of {int(stats["episodes"]):3d}  named {name} '
                     f"(95% CI {low:.0%}-{high:.0%})")
    for text, stats in sorted(r.per_instruction.items()):
        lines.append(f'    {stats["success_rate"]:>4.0%} of {int(stats["episodes"]):3d}  "{text}"')
    return "\n".join(lines)
