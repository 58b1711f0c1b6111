"""SO-101 sim: every registered env, the experts, recording to LeRobot v3, rollouts, and `lerobot-eval`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import vla.envs  # noqa: F401  (registers the gym ids)
from vla.envs.registry import ENV_IDS
from vla.envs.so101 import FEATURE_NAMES, SO101Config, SO101Env
from vla.envs.tasks import TASKS


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_env_create_reset_step_shapes_and_determinism(env_id: str) -> None:
    def run(seed: int) -> list[dict]:
        env = gym.make(env_id, image_size=(32, 40))
        obs, info = env.reset(seed=seed)
        rng = np.random.default_rng(0)
        trace = [obs]
        for _ in range(5):
            action = obs["agent_pos"] + rng.normal(0, 3, size=6).astype(np.float32)
            obs, reward, _, _, info = env.step(action)
            assert np.isfinite(reward) and isinstance(info["is_success"], bool)
            trace.append(obs)
        assert isinstance(env.unwrapped.task_description, str) and env.unwrapped.task_description
        env.close()
        return trace

    first, again, other = run(3), run(3), run(4)
    for obs in first:
        assert obs["agent_pos"].shape == (6,) and obs["agent_pos"].dtype == np.float32
        assert np.all(np.isfinite(obs["agent_pos"]))
        for cam in ("front", "wrist"):
            assert obs["pixels"][cam].shape == (32, 40, 3) and obs["pixels"][cam].dtype == np.uint8
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["agent_pos"], b["agent_pos"])
        np.testing.assert_array_equal(a["pixels"]["front"], b["pixels"]["front"])
    assert not np.array_equal(first[0]["pixels"]["front"], other[0]["pixels"]["front"])  # seeds move objects


def test_gym_make_returns_the_env_itself() -> None:
    env = gym.make("so101/pick-color")  # LeRobot's eval loop reads attributes on the env it gets
    assert isinstance(env, SO101Env) and env._max_episode_steps == TASKS["pick-color"].max_steps
    env.close()


def test_units_round_trip_and_action_space() -> None:
    env = SO101Env(TASKS["reach"](), SO101Config(cameras=()))
    q = np.array([0.1, -0.5, 0.7, 1.2, -0.3, 0.4])
    np.testing.assert_allclose(env.to_radians(env.to_user(q)), q)
    user = env.to_user(env.ranges.T)
    assert user[0, 5] == pytest.approx(0.0) and user[1, 5] == pytest.approx(100.0)  # gripper 0-100 over its range
    assert env.action_space.shape == (6,)
    with pytest.raises(ValueError, match="6 finite numbers"):
        env.step(np.full(6, np.nan))
    with pytest.raises(ValueError, match="unknown camera"):
        SO101Env(TASKS["reach"](), SO101Config(cameras=("top",)))


def test_position_servo_tracks_a_held_command() -> None:
    env = SO101Env(TASKS["reach"](), SO101Config(cameras=()))
    obs, _ = env.reset(seed=0)
    target = obs["agent_pos"] + np.array([10, 8, -8, 5, 20, 20], dtype=np.float32)
    for _ in range(45):  # 1.5 s at 30 Hz
        obs, *_ = env.step(target)
    np.testing.assert_allclose(obs["agent_pos"], target, atol=3.0)  # degrees (gripper: 0-100 units)


@pytest.mark.parametrize("task", list(TASKS))
def test_scripted_expert_succeeds(task: str) -> None:
    from vla.envs.experts import ScriptedExpert

    env = SO101Env(TASKS[task](), SO101Config(cameras=()))
    expert = ScriptedExpert(env)
    wins = 0
    for seed in range(5):
        env.reset(seed=seed)
        expert.reset()
        for _ in range(env._max_episode_steps):
            _, _, terminated, truncated, info = env.step(expert.act())
            if terminated or truncated:
                break
        wins += info["is_success"]
    assert wins >= 4, f"{task}: expert succeeded in {wins}/5 (measured >= 95% over 100 seeds)"


def test_scripted_expert_plans_again_when_its_cube_is_knocked_out_of_the_zone() -> None:
    """The expert checks what its plan achieved: a cube pushed out of the zone after the release is fetched again."""
    from vla.envs.experts import ScriptedExpert
    from vla.envs.tasks import set_cube

    env = SO101Env(TASKS["place"](), SO101Config(cameras=(), max_steps=400))
    expert = ScriptedExpert(env)
    env.reset(seed=3)
    expert.reset()
    knocked = False
    for _ in range(400):
        if expert.index == len(expert.plan) - 1 and not knocked:  # released, retreating
            zone = env.task_spec.zone  # type: ignore[attr-defined]
            c, s = np.cos(0.4), np.sin(0.4)  # 0.4 rad round the base: 6 cm away, still in reach
            set_cube(env, "cube", np.array([c * zone[0] - s * zone[1], s * zone[0] + c * zone[1]]), 0.3)
            knocked = True
        _, _, terminated, truncated, info = env.step(expert.act())
        if terminated or truncated:
            break
    assert knocked and info["is_success"] and expert.retries == 1


def test_recording_with_action_noise_executes_the_perturbed_action_and_records_the_experts(tmp_path: Path) -> None:
    from lerobot.datasets import LeRobotDataset

    from vla.envs.collect import ActionNoise, record
    from vla.envs.experts import ScriptedExpert
    from vla.envs.registry import make_so101

    out = tmp_path / "place"
    summary = record("so101/place", 1, out, image_size=(32, 32), use_videos=False, progress=False, action_noise=2.0)
    assert summary.saved == summary.attempted == 1  # the episode of seed 0
    ds = LeRobotDataset("local/so101_place", root=out)

    env = make_so101("place", image_size=(32, 32))  # replay: states follow the noisy actions, labels the expert's
    expert = ScriptedExpert(env)
    obs, _ = env.reset(seed=0)
    expert.reset()
    noise = ActionNoise(6, 2.0, seed=0)
    gaps = []
    for index in range(ds.meta.episodes[0]["length"]):
        item = ds[index]
        np.testing.assert_array_equal(item["observation.state"].numpy(), obs["agent_pos"])
        action = expert.act()
        np.testing.assert_array_equal(item["action"].numpy(), action)
        sent = noise(action)
        gaps.append(np.abs(sent - action))
        obs, *_ = env.step(sent)
    gap = np.array(gaps)
    assert gap[:, 5].max() == 0.0 and 1.0 < gap[:, :5].mean() < 3.0  # the gripper untouched, the arm by ~2 degrees

    with pytest.raises(ValueError, match="action noise must be >= 0"):
        record("so101/place", 1, tmp_path / "bad", action_noise=-1.0, progress=False)


def test_action_noise_drifts_slowly_with_its_standard_deviation() -> None:
    from vla.envs.collect import ActionNoise

    noise = ActionNoise(6, 2.0, seed=5)
    x = np.array([noise(np.zeros(6, np.float32)) for _ in range(20000)])
    assert np.all(x[:, 5] == 0)
    assert np.allclose(x[:, :5].std(axis=0), 2.0, rtol=0.15)
    lag1 = np.mean([np.corrcoef(x[:-1, j], x[1:, j])[0, 1] for j in range(5)])
    assert 0.85 < lag1 < 0.95  # correlation time of 10 ticks: each tick keeps 0.9 of the last
    again = ActionNoise(6, 2.0, seed=5)
    np.testing.assert_array_equal(again(np.zeros(6, np.float32)), x[0])  # one seed, one noise


def test_start_noise_sets_how_far_the_arm_starts_from_home() -> None:
    from vla.envs.registry import make_so101
    from vla.envs.so101 import HOME

    still = make_so101("reach", image_size=(16, 16), cameras=(), start_noise=0.0)
    wide = make_so101("reach", image_size=(16, 16), cameras=(), start_noise=10.0)
    spread = []
    for seed in range(3):
        at_home, _ = still.reset(seed=seed)
        moved, _ = wide.reset(seed=seed)
        np.testing.assert_allclose(at_home["agent_pos"][:5], HOME[:5], atol=0.5)
        spread.append(np.abs(moved["agent_pos"][:5] - HOME[:5]).max())
    assert 4.0 < max(spread) <= 10.5  # beyond the default's 4 degrees, within the asked 10
    with pytest.raises(ValueError, match="SO-101 start noise is in joint degrees"):
        make_so101("reach", start_noise=-1.0)
    still.close()
    wide.close()


def test_no_success_without_acting() -> None:
    for task in ("pick", "place", "reach"):
        env = SO101Env(TASKS[task](), SO101Config(cameras=()))
        obs, _ = env.reset(seed=1)
        for _ in range(30):
            obs, _, terminated, _, info = env.step(obs["agent_pos"])
        assert not info["is_success"] and not terminated, task


def test_recorded_dataset_matches_env(tmp_path: Path) -> None:
    from lerobot.datasets import LeRobotDataset

    from vla.envs.collect import record
    from vla.envs.experts import ScriptedExpert
    from vla.envs.registry import make_so101

    out = tmp_path / "reach"
    summary = record("so101/reach", 2, out, image_size=(32, 32), use_videos=False, progress=False)
    assert summary.saved == 2 and summary.successes == summary.attempted
    ds = LeRobotDataset("local/so101_reach", root=out)
    assert ds.meta.total_episodes == 2 and ds.meta.fps == 30
    from vla.datasets.check import check_dataset

    assert not check_dataset(out), check_dataset(out)  # a clean dataset, statistics included
    assert ds.meta.features["observation.state"]["names"] == list(FEATURE_NAMES)

    env = make_so101("reach", image_size=(32, 32))  # replay episode 0 (seed 0) and compare frame by frame
    expert = ScriptedExpert(env)
    obs, _ = env.reset(seed=0)
    expert.reset()
    for index in range(ds.meta.episodes[0]["length"]):
        item = ds[index]
        action = expert.act()
        assert item["task"] == env.task_description
        np.testing.assert_array_equal(item["observation.state"].numpy(), obs["agent_pos"])
        np.testing.assert_array_equal(item["action"].numpy(), action)
        for cam in ("front", "wrist"):
            pixels = (item[f"observation.images.{cam}"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            np.testing.assert_array_equal(pixels, obs["pixels"][cam])
        obs, *_ = env.step(action)


def test_record_chooses_its_cameras(tmp_path: Path) -> None:
    """`--cameras close,wrist`: the dataset holds those views (the close one framed on the workspace), no front."""
    from lerobot.datasets import LeRobotDataset

    from vla.envs.collect import record
    from vla.envs.registry import make_so101

    out = tmp_path / "close"
    record("so101/reach", 1, out, image_size=(32, 32), cameras=("close", "wrist"), use_videos=False, progress=False)
    ds = LeRobotDataset("local/so101_reach", root=out)
    assert sorted(ds.meta.camera_keys) == ["observation.images.close", "observation.images.wrist"]
    env = make_so101("reach", image_size=(32, 32), cameras=("close", "wrist"))
    obs, _ = env.reset(seed=0)
    close = (ds[0]["observation.images.close"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(close, obs["pixels"]["close"])
    front = make_so101("reach", image_size=(32, 32)).reset(seed=0)[0]["pixels"]["front"]
    assert not np.array_equal(close, front)  # another view of the same scene
    with pytest.raises(ValueError, match=r"unknown camera\(s\) \['top'\]"):
        make_so101("reach", cameras=("top",))


def test_record_resume_and_interrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lerobot.datasets import LeRobotDataset

    from vla.envs import experts
    from vla.envs.collect import record

    out = tmp_path / "pick"
    record("so101/pick", 2, out, image_size=(32, 32), use_videos=True, progress=False)
    calls = {"n": 0}
    act = experts.ScriptedExpert.act

    def act_then_interrupt(self):  # Ctrl-C in the middle of the second appended episode
        calls["n"] += 1
        if calls["n"] == 80:
            raise KeyboardInterrupt
        return act(self)

    monkeypatch.setattr(experts.ScriptedExpert, "act", act_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        record("so101/pick", 5, out, resume=True, image_size=(32, 32), use_videos=True, progress=False)
    ds = LeRobotDataset("local/so101_pick", root=out)
    assert ds.meta.total_episodes == 3  # two from the first run, one appended before the interrupt
    assert len(ds) == ds.meta.total_frames and ds[len(ds) - 1]["episode_index"].item() == 2
    assert json.loads((out / "meta/vla_record.json").read_text())["next_seed"] == 3
    with pytest.raises(FileExistsError, match="--resume"):
        record("so101/pick", 1, out, progress=False)
    import vla.envs.collect as collect

    closed: list[str] = []
    real_make_env = collect.make_env

    def make_env_noting_close(name: str, **kwargs: Any) -> Any:
        env = real_make_env(name, **kwargs)
        real_close = env.close

        def close() -> None:
            closed.append(name)
            real_close()

        env.close = close
        return env

    monkeypatch.setattr(collect, "make_env", make_env_noting_close)
    with pytest.raises(ValueError, match=r"stored as video on disk, image requested .* --video appends"):
        record("so101/pick", 1, out, resume=True, image_size=(32, 32), use_videos=False, progress=False)
    assert closed == ["so101/pick"]  # the refused resume still closes the env it built


def test_top_up_evens_out_a_stopped_multi_task_recording_and_a_resume_keeps_its_noise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vla.envs.collect as collect
    from vla.envs.collect import record

    out, envs = tmp_path / "two", "so101/reach,so101/pick"
    real_play = collect._play

    plays = {"n": 0}

    def stop_at_pick(*args: Any, **kwargs: Any) -> bool:  # Ctrl-C as the second attempt, the first pick, starts
        plays["n"] += 1
        if plays["n"] == 2:
            raise KeyboardInterrupt
        return real_play(*args, **kwargs)

    monkeypatch.setattr(collect, "_play", stop_at_pick)
    kwargs: dict[str, Any] = {"image_size": (32, 32), "use_videos": False, "progress": False, "action_noise": 1.0}
    with pytest.raises(KeyboardInterrupt):
        record(envs, 2, out, **kwargs)
    monkeypatch.setattr(collect, "_play", real_play)

    def per_env() -> list[int]:  # saved episodes of reach, of pick, by the record's list, which must tile the data
        from lerobot.datasets import LeRobotDataset

        origins = json.loads((out / "meta/vla_record.json").read_text())["episode_env"]
        assert LeRobotDataset("local/x", root=out).meta.total_episodes == len(origins)
        return [origins.count(0), origins.count(1)]

    assert per_env() == [1, 0]
    with pytest.raises(ValueError, match=r"recorded with --action-noise 1.0, not 0.5; resume with --action-noise 1.0"):
        record(envs, 2, out, resume=True, top_up=True, **{**kwargs, "action_noise": 0.5})
    with pytest.raises(ValueError, match="--start-noise the default, not 10"):
        record(envs, 2, out, resume=True, top_up=True, start_noise=10, **kwargs)
    summary = record(envs, 2, out, resume=True, top_up=True, **kwargs)
    assert summary.per_env["so101/reach"]["saved"] == 1 and summary.per_env["so101/pick"]["saved"] == 2
    assert per_env() == [2, 2]  # filled up to 2 each, not 2 more each
    assert record(envs, 2, out, resume=True, top_up=True, **kwargs).saved == 0  # already full
    assert record(envs, 1, out, resume=True, **kwargs).saved == 2  # --resume alone appends 1 more of each
    assert per_env() == [3, 3]
    with pytest.raises(ValueError, match="needs resume"):
        record(envs, 2, out, top_up=True, **kwargs)
    meta = json.loads((out / "meta/vla_record.json").read_text())
    del meta["episode_env"]  # as a record from before the list was kept
    (out / "meta/vla_record.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="cannot count them; append with --resume"):
        record(envs, 4, out, resume=True, top_up=True, **kwargs)
    single = tmp_path / "one"  # one env: its episodes are all its own, with or without the list
    record("so101/reach", 1, single, **kwargs)
    (single / "meta/vla_record.json").unlink()
    assert record("so101/reach", 2, single, resume=True, top_up=True, **kwargs).saved == 1


@pytest.mark.parametrize("storage", ["--video", "--images"])
def test_record_survives_sigkill_mid_episode_and_resumes(tmp_path: Path, storage: str) -> None:
    """With a commit after every episode (on-robot recording's setting), a process killed without any cleanup keeps
    every saved episode loadable, and `--resume` carries on, dropping what the episode in progress left: its
    half-encoded video (video datasets encode while recording) or its PNG frames (image datasets). (Commits at
    intervals: tests/datasets/test_writer.py.)"""
    import signal
    import time

    from lerobot.datasets import LeRobotDataset

    out = tmp_path / "reach"
    vla = str(Path(sys.executable).with_name("vla"))
    cmd = [vla, "record", "--env", "so101/reach", "--episodes", "100", "--out", str(out), "--image-size", "32x32",
           "--commit-every", "0", storage]
    video = storage == "--video"

    def unsaved() -> list[Path]:  # what the episode in progress keeps on disk
        return sorted(out.glob("tmp*/*.mp4")) if video else sorted((out / "images").rglob("*.png"))

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "meta/vla_record.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:  # kill it with 3+ episodes saved, mid-episode
        saved = state.is_file() and json.loads(state.read_text())["next_seed"] >= 3
        if saved and len(unsaved()) >= (1 if video else 10):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = unsaved()
    assert left  # the unsaved episode's frames or video were on disk when it died
    if not video:
        for i in range(100, 140):  # as if it had run longer than the episode that will take its index
            (left[0].parent / f"frame-{i:06d}.png").write_bytes(left[0].read_bytes())

    def check(ds: LeRobotDataset) -> None:
        assert len(ds) == ds.meta.total_frames
        for ep in range(ds.meta.total_episodes):  # every episode's video spans exactly its frames
            meta = ds.meta.episodes[ep]
            for cam in ("front", "wrist") if video else ():
                span = meta[f"videos/observation.images.{cam}/to_timestamp"]
                span -= meta[f"videos/observation.images.{cam}/from_timestamp"]
                assert span == pytest.approx(meta["length"] / 30, abs=1e-3)
            for index in (meta["dataset_from_index"], meta["dataset_to_index"] - 1):
                assert ds[index]["episode_index"].item() == ep  # decodes, within timestamp tolerance

    killed = LeRobotDataset("local/so101_reach", root=out)
    saved = killed.meta.total_episodes
    assert saved >= 3
    check(killed)
    subprocess.run([*cmd[:5], "2", *cmd[6:], "--resume"], check=True, capture_output=True)
    resumed = LeRobotDataset("local/so101_reach", root=out)
    assert resumed.meta.total_episodes == saved + 2 and not unsaved() and not list(out.glob("tmp*"))
    check(resumed)


def test_parallel_recording_joins_its_shards_into_one_dataset_of_disjoint_seeds(tmp_path: Path) -> None:
    """Two workers record 5 episodes: worker 0 seeds 0, 2, 4 and worker 1 seeds 1, 3, joined in that order into
    one clean dataset, whose record state lets a one-worker --resume carry on with fresh seeds."""
    from lerobot.datasets import LeRobotDataset

    from vla.datasets.check import check_dataset
    from vla.envs.collect import record
    from vla.envs.registry import make_so101

    out = tmp_path / "reach"
    kwargs: dict[str, Any] = {"image_size": (32, 32), "use_videos": False, "progress": False}
    summary = record("so101/reach", 5, out, workers=2, **kwargs)
    assert (summary.saved, summary.attempted, summary.successes) == (5, 5, 5) and summary.frames > 0
    assert not out.with_name(".reach.shards").exists()
    ds = LeRobotDataset("local/so101_reach", root=out)
    assert ds.meta.total_episodes == 5 and len(ds) == ds.meta.total_frames == summary.frames
    assert not check_dataset(out), check_dataset(out)  # statistics recomputed over the joined data
    env = make_so101("reach", image_size=(32, 32))
    for episode, seed in enumerate((0, 2, 4, 1, 3)):
        obs, _ = env.reset(seed=seed)
        first = ds[ds.meta.episodes[episode]["dataset_from_index"]]
        assert first["episode_index"].item() == episode
        np.testing.assert_array_equal(first["observation.state"].numpy(), obs["agent_pos"])
    env.close()
    state = json.loads((out / "meta/vla_record.json").read_text())
    assert state["next_seed"] == 6 and state["episode_env"] == [0] * 5  # worker 0's next seed is 6
    with pytest.raises(ValueError, match="one worker"):
        record("so101/reach", 1, out, resume=True, workers=2, **kwargs)
    with pytest.raises(FileExistsError, match="already exists"):
        record("so101/reach", 1, out, workers=2, **kwargs)
    record("so101/reach", 1, out, resume=True, **kwargs)
    assert LeRobotDataset("local/so101_reach", root=out).meta.total_episodes == 6
    assert json.loads((out / "meta/vla_record.json").read_text())["next_seed"] == 7


def test_parallel_recording_stopped_with_ctrl_c_keeps_what_its_workers_saved(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group, as from a terminal: the workers leave stopping to the parent, which
    stops them, joins what they saved into --out and exits 130."""
    import signal
    import time

    from lerobot.datasets import LeRobotDataset

    from vla.datasets.check import check_dataset

    def ctrl_c_as_in_a_terminal() -> None:  # a process started by `make test &` inherits SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    out = tmp_path / "reach"
    vla = str(Path(sys.executable).with_name("vla"))
    cmd = [vla, "record", "--env", "so101/reach", "--episodes", "100", "--out", str(out), "--image-size", "32x32",
           "--workers", "2", "--commit-every", "0"]
    log = (tmp_path / "record.log").open("w")  # not a pipe: the encoders' chatter would fill it and block them
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
                            preexec_fn=ctrl_c_as_in_a_terminal)
    states = [out.with_name(".reach.shards") / f"{k:02d}" / "meta/vla_record.json" for k in range(2)]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:  # both workers have saved an episode
        if all(s.is_file() and json.loads(s.read_text()).get("episode_env") for s in states):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=120)
    log.close()
    err = (tmp_path / "record.log").read_text()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and not out.with_name(".reach.shards").exists()
    ds = LeRobotDataset("local/so101_reach", root=out)
    assert 2 <= ds.meta.total_episodes < 100 and len(ds) == ds.meta.total_frames
    assert not check_dataset(out, frames=False), check_dataset(out, frames=False)
    state = json.loads((out / "meta/vla_record.json").read_text())
    assert len(state["episode_env"]) == ds.meta.total_episodes


def test_expert_rollout_reports_success_and_writes_videos(tmp_path: Path) -> None:
    from vla.envs.rollout import EVAL_SEED, rollout, wilson

    result = rollout("expert", "so101/reach", episodes=3, n_envs=2, out=tmp_path, videos=1, progress=False)
    assert result.successes == 3 and result.seeds == (EVAL_SEED, EVAL_SEED + 2)
    assert result.ci95 == pytest.approx(wilson(3, 3)) and result.ci95[0] < 1.0
    assert len(result.videos) == 1 and Path(result.videos[0]).stat().st_size > 1000
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["episodes"] == 3 and len(saved["episodes_detail"]) == 3


def test_wilson_interval() -> None:
    from vla.envs.rollout import wilson

    low, high = wilson(45, 50)
    assert 0.78 < low < 0.8 and 0.95 < high < 0.97  # textbook values for 45/50
    assert wilson(0, 10)[0] == 0.0


def test_lerobot_eval_feeds_the_policy_what_vla_rollout_feeds_it(so101_checkpoint: Path) -> None:
    """LeRobot's eval path (its vector env from our `vla_so101` config, `preprocess_observation`, the env and policy
    processors) and ours (`CheckpointActor`'s batch) give the policy the same inputs, so with the same noise the
    same actions: a policy scores the same in `lerobot-eval` as in `vla rollout`."""
    import torch
    from lerobot.envs import make_env as lerobot_make_env
    from lerobot.envs import make_env_config, make_env_pre_post_processors, preprocess_observation

    from vla.envs.suite import make_env
    from vla.policies.inference import InferencePolicy
    from vla.runtime.checkpoint import env_batch

    runner = InferencePolicy.load(so101_checkpoint)
    seeds = [1_000_000, 1_000_001]
    env_cfg = make_env_config("vla_so101", task="reach", image_height=32, image_width=32)
    vector = next(iter(next(iter(lerobot_make_env(env_cfg, n_envs=2).values())).values()))
    raw, _ = vector.reset(seed=seeds)
    batch = preprocess_observation(raw)
    batch["task"] = list(vector.call("task_description"))
    env_pre, _ = make_env_pre_post_processors(env_cfg, runner.config)
    theirs = runner.pre(env_pre(batch))
    vector.close()

    envs = [make_env("so101/reach", image_size=(32, 32)) for _ in seeds]
    observations = [env.reset(seed=s)[0] for env, s in zip(envs, seeds, strict=True)]
    ours = runner.pre(env_batch(observations, [env.task_description for env in envs]))
    assert batch["task"] == [env.task_description for env in envs]

    cfg = runner.policy.model.cfg
    noise = torch.randn(2, cfg.chunk_size, cfg.max_action_dim, generator=torch.Generator().manual_seed(0))
    expected = runner.policy.predict_action_chunk(ours, noise=noise)
    actual = runner.policy.predict_action_chunk(theirs, noise=noise)
    assert (expected[0] - expected[1]).abs().max() > 1e-3  # the two scenes differ, so the comparison can fail
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_lerobot_eval_and_vla_rollout_play_their_episodes(so101_checkpoint: Path, tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    evaluate = [
        str(bin_dir / "lerobot-eval"), f"--policy.path={so101_checkpoint}", "--env.discover_packages_path=vla.envs",
        "--env.type=vla_so101", "--env.task=reach", "--env.image_height=32", "--env.image_width=32",
        "--env.episode_length=20", "--eval.n_episodes=2", "--eval.batch_size=2", "--policy.device=cpu",
        "--seed=1000000", f"--output_dir={tmp_path / 'eval'}",
    ]  # fmt: skip
    proc = subprocess.run(evaluate, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    info = json.loads((tmp_path / "eval" / "eval_info.json").read_text())
    metrics = info["per_task"][0]["metrics"]
    assert info["overall"]["n_episodes"] == 2 and len(metrics["successes"]) == 2
    assert all(np.isfinite(r) and r < 0 for r in metrics["sum_rewards"])  # the reach task's distance penalties

    cli = [str(bin_dir / "vla"), "rollout", "--policy", str(so101_checkpoint), "--env", "so101/reach", "--episodes",
           "2", "--n-envs", "2", "--videos", "1", "--out", str(tmp_path / "rollout")]  # fmt: skip
    proc = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "rollout" / "results.json").read_text())
    assert [r["seed"] for r in results["episodes_detail"]] == [1_000_000, 1_000_001]
    assert all(r["steps"] > 0 and r["return"] < 0 for r in results["episodes_detail"])
    assert len(list((tmp_path / "rollout").rglob("*.mp4"))) == 1


def test_a_scene_can_be_asked_for_another_cube_and_lifting_the_wrong_one_is_flagged() -> None:
    from vla.envs.experts import ScriptedExpert

    env = SO101Env(TASKS["pick-color"](), SO101Config(cameras=()))
    env.reset(seed=7, options={"target": "red"})
    layout = {c: env.body_pos(c) for c in ("red", "green", "blue")}
    assert "red" in env.task_description and env.task_spec.target == "red"
    env.reset(seed=7, options={"target": "blue"})
    assert "blue" in env.task_description and env.task_spec.target == "blue"
    for cube, position in layout.items():
        np.testing.assert_allclose(env.body_pos(cube), position)  # the same scene, another instruction
    with pytest.raises(ValueError, match="no 'purple' cube"):
        env.reset(seed=7, options={"target": "purple"})
    with pytest.raises(ValueError, match="names no object"):
        SO101Env(TASKS["reach"](), SO101Config(cameras=())).reset(seed=0, options={"target": "red"})

    env.reset(seed=7, options={"target": "red"})
    expert = ScriptedExpert(env, max_retries=0)  # its first plan only: no second try for the green one
    expert.reset()  # plans a grasp of the red cube ...
    env.task_spec.target = "green"  # ... while the task now names the green one
    for _ in range(env._max_episode_steps):
        _, _, _, truncated, info = env.step(expert.act())
        if truncated:
            break
    assert info["wrong_object"] == 1.0 and not info["is_success"]
