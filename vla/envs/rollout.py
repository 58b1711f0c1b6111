"""`vla rollout`: evaluate a checkpoint (or the scripted expert) in an env and report success rates.

Episodes run in waves of `n_envs` envs stepped in lockstep, so the policy sees one batch per tick (its action
queue is shared by the batch, so a wave starts and ends together; an env that finishes early idles). Seeds start
at `EVAL_SEED`, far from the recording seeds (0 up), so rollouts never replay a training initial state. Reports
success with a 95% Wilson interval overall and per instruction, writes `results.json` and mp4 videos of the first
episodes (front camera).
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from vla.envs.suite import make_env, make_expert

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


class Actor(Protocol):
    """What `rollout` plays: a policy acting on a batch of env observations (`vla.runtime.checkpoint.
    CheckpointActor` loads any LeRobot checkpoint as one). `name` is what the results call it."""

    name: str

    def reset(self) -> None: ...
    def act(self, observations: list[dict[str, Any]], tasks: list[str]) -> np.ndarray: ...


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
    policy: Actor | Literal["expert"],
    env_name: str,
    episodes: int = 50,
    n_envs: int = 4,
    out: str | Path = "outputs/rollout",
    seed: int = EVAL_SEED,
    videos: int = 4,
    progress: bool = True,
    targets: tuple[str, ...] = (),
) -> RolloutResult:
    """Roll `policy` (an `Actor`, or "expert": the env's scripted expert) out for `episodes` episodes from seed
    `seed` on. With `targets` (a language probe), each
    scene is played once per target, naming that object (episode k: seed `seed + k // len(targets)`, target
    `targets[k % len(targets)]`), so the same layout is asked for each object in turn."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_envs = max(1, min(n_envs, episodes))
    actor = None if policy == "expert" else policy
    views = env_views(getattr(actor, "cameras", None))
    envs = [make_env(env_name, **views) for _ in range(n_envs)]
    experts = [make_expert(e) for e in envs] if actor is None else None
    records: list[dict[str, Any]] = []
    video_paths: list[str] = []
    start = time.perf_counter()
    bar = tqdm(total=episodes, desc=f"rollout {env_name}", unit="ep", disable=not progress)
    try:
        while len(records) < episodes:
            first, wave = len(records), min(n_envs, episodes - len(records))
            seeds = [seed + (first + i) // len(targets) if targets else seed + first + i for i in range(wave)]
            options = [{"target": targets[(first + i) % len(targets)]} if targets else None for i in range(wave)]
            played, clips = _play_wave(envs[:wave], seeds, options, actor, experts, filmed=max(0, videos - first))
            records += played
            for i, clip in clips.items():
                path = out / f"episode_{first + i:03d}_{'success' if played[i]['success'] else 'failure'}.mp4"
                write_mp4(path, clip, envs[i].metadata["render_fps"])
                video_paths.append(str(path))
            bar.update(wave)
            bar.set_postfix(success=f"{sum(r['success'] for r in records)}/{len(records)}")
    finally:
        bar.close()
        for e in envs:
            e.close()
    wins = sum(r["success"] for r in records)
    result = RolloutResult(
        env=env_name, policy="expert" if actor is None else actor.name, episodes=len(records), successes=wins,
        success_rate=wins / len(records), ci95=wilson(wins, len(records)),
        per_instruction=rates_by(records, "instruction"), per_target=rates_by(records, "target"),
        wrong_object=sum(bool(r["wrong_object"]) for r in records)
        if any(r["wrong_object"] is not None for r in records) else None,
        seeds=(seed, records[-1]["seed"]), mean_steps=float(np.mean([r["steps"] for r in records])),
        seconds=time.perf_counter() - start, videos=video_paths,
    )  # fmt: skip
    (out / "results.json").write_text(json.dumps({**asdict(result), "episodes_detail": records}, indent=2))
    return result


def _play_wave(envs: list[Any], seeds: list[int], options: list[dict[str, str] | None], actor: Actor | None,
               experts: list[Any] | None, filmed: int) -> tuple[list[dict[str, Any]], dict[int, list[np.ndarray]]]:
    """One episode in each env, stepped together (the actor acts on the whole batch at once) -> a record per
    episode and the frames of the first `filmed` envs."""
    obs = [env.reset(seed=s, options=o)[0] for env, s, o in zip(envs, seeds, options, strict=True)]
    tasks = [env.task_description for env in envs]
    for expert in experts or []:
        expert.reset()
    if actor is not None:
        actor.reset()
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


def rollout_tasks(policy: Actor | Literal["expert"], env_names: list[str], episodes: int = 50, n_envs: int = 4,
                  out: str | Path = "outputs/rollout", **kwargs: Any) -> list[RolloutResult]:  # fmt: skip
    """`rollout` on each env in turn (a multi-task policy), each into `task_out(out, env)`; `out/summary.json`
    holds every env's success and their mean (`summarize`)."""
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
