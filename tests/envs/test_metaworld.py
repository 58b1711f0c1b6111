"""Meta-World v3 adapter: every listed task builds, steps, honours seeds, and its shipped expert succeeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import vla.envs  # noqa: F401
from vla.envs.metaworld import TASKS, MetaWorldEnv, MetaWorldExpert


@pytest.mark.parametrize("task", TASKS)
def test_metaworld_task_seeds_and_expert(task: str) -> None:
    env = MetaWorldEnv(task, image_size=(32, 32))
    a, _ = env.reset(seed=1)
    state_a = env.raw_obs.copy()
    b, _ = env.reset(seed=1)
    np.testing.assert_array_equal(env.raw_obs, state_a)
    np.testing.assert_array_equal(a["pixels"]["corner"], b["pixels"]["corner"])
    env.reset(seed=2)
    assert not np.allclose(env.raw_obs[4:], state_a[4:])  # another seed moves the objects or the goal
    assert a["pixels"]["corner"].shape == (32, 32, 3) and a["agent_pos"].shape == (4,)
    assert env.task_description and env.task_description[0].isupper()

    expert = MetaWorldExpert(env)
    env.reset(seed=3)
    expert.reset()
    for _ in range(env._max_episode_steps):
        obs, reward, terminated, truncated, info = env.step(expert.act())
        assert np.all(np.isfinite(obs["agent_pos"])) and np.isfinite(reward)
        if terminated or truncated:
            break
    assert info["is_success"], f"Meta-World's expert failed {task} on seed 3"
    env.close()


@pytest.mark.parametrize("task", ["reach", "push", "pick-place"])
def test_first_frame_shows_the_goal_marker_where_the_goal_is(task: str) -> None:
    """Meta-World moves the goal marker on reset without updating the rendered world positions; the first frame
    must not show it at another episode's goal (found at 96 px: the marker sat elsewhere until the first step)."""
    from vla.sim.gl import mujoco

    env = MetaWorldEnv(task, image_size=(48, 48), cameras=("corner",))
    for seed in (0, 1):
        obs, _ = env.reset(seed=seed)
        data = env.env.data
        np.testing.assert_allclose(data.site("goal").xpos, env.raw_obs[36:39], atol=1e-6)
        first = obs["pixels"]["corner"]
        mujoco.mj_forward(env.env.model, data)
        np.testing.assert_array_equal(env.render_camera("corner"), first)
    env.close()


def test_each_task_renders_its_own_scene_beside_other_tasks() -> None:
    """Several tasks in one process each render in their own OpenGL context; gymnasium leaves the last-made one
    current, so without `render_camera` making its own current, reach drew the door task's meshes and textures
    (what five of six tasks of the six-task recordings stored)."""
    reach = MetaWorldEnv("reach", image_size=(32, 32), cameras=("corner",))
    alone = reach.reset(seed=0)[0]["pixels"]["corner"]
    door = MetaWorldEnv("door-open", image_size=(32, 32), cameras=("corner",))
    door_alone = door.reset(seed=0)[0]["pixels"]["corner"]
    assert np.abs(alone.astype(int) - door_alone).mean() > 5  # two different scenes, so the check below can fail
    np.testing.assert_array_equal(reach.render_camera("corner"), alone)
    np.testing.assert_array_equal(reach.reset(seed=0)[0]["pixels"]["corner"], alone)
    np.testing.assert_array_equal(door.render_camera("corner"), door_alone)
    reach.close()
    door.close()


def test_record_metaworld(tmp_path: Path) -> None:
    from lerobot.datasets import LeRobotDataset

    from vla.envs.collect import record

    summary = record("metaworld/button-press-topdown", 1, tmp_path / "mw", image_size=(32, 32), progress=False)
    ds = LeRobotDataset("local/metaworld_button-press-topdown", root=tmp_path / "mw")
    assert summary.saved == 1 and ds.meta.fps == 80
    item = ds[0]
    assert item["task"] == "Press a button from the top"
    assert item["observation.images.corner"].shape == (3, 32, 32) and item["action"].shape == (4,)
    assert item["observation.images.gripper"].shape == (3, 32, 32)


def test_gripper_camera_rides_on_the_hand() -> None:
    """The `gripper` view moves with the hand (a wrist camera) while the corner camera stays put; `cameras` picks
    the views, and an unknown one is an error naming the choices."""
    env = MetaWorldEnv("reach", image_size=(32, 32))
    obs, _ = env.reset(seed=0)
    model, data = env.env.model, env.env.data
    gripper_cam, corner_cam = model.camera("behindGripper").id, model.camera("corner2").id
    hand0 = obs["agent_pos"][:3].copy()
    cam0, corner0 = data.cam_xpos[gripper_cam].copy(), data.cam_xpos[corner_cam].copy()
    for _ in range(15):
        moved, *_ = env.step(np.array([1.0, 0.0, 0.0, -1.0]))
    shift = moved["agent_pos"][:3] - hand0
    assert shift[0] > 0.05  # the hand went 5+ cm along x
    np.testing.assert_allclose(data.cam_xpos[gripper_cam] - cam0, shift, atol=0.01)
    np.testing.assert_allclose(data.cam_xpos[corner_cam], corner0)
    assert np.abs(moved["pixels"]["gripper"].astype(int) - obs["pixels"]["gripper"]).mean() > 1  # the view moved
    env.close()

    corner_only = MetaWorldEnv("reach", image_size=(16, 16), cameras=("corner",))
    assert set(corner_only.reset(seed=0)[0]["pixels"]) == {"corner"}
    assert set(corner_only.observation_space["pixels"]) == {"corner"}  # type: ignore[index]
    corner_only.close()
    with pytest.raises(ValueError, match=r"unknown Meta-World camera.*'wrist'.*corner, gripper"):
        MetaWorldEnv("reach", cameras=("wrist",))


def test_record_and_roll_out_several_tasks(tmp_path: Path) -> None:
    """A multi-task dataset: each env records its episodes into one dataset, in turns; a rollout over several envs
    plays each and reports their mean."""
    import json

    from lerobot.datasets import LeRobotDataset

    from vla.envs.collect import record
    from vla.envs.rollout import rollout_tasks

    names = ["metaworld/reach", "metaworld/button-press-topdown"]
    summary = record(names, 2, tmp_path / "mw", image_size=(32, 32), progress=False)
    assert summary.saved == 4 and set(summary.per_env) == set(names)
    assert all(c["saved"] == 2 for c in summary.per_env.values())
    ds = LeRobotDataset("local/metaworld_2tasks", root=tmp_path / "mw")
    assert ds.meta.total_episodes == 4
    # in turns: episodes 0 and 2 are the first env's, 1 and 3 the second's
    tasks = [ds[int(ds.meta.episodes["dataset_from_index"][i])]["task"] for i in range(4)]
    assert tasks[0] == tasks[2] != tasks[1] == tasks[3]
    assert set(tasks) == {"Reach a goal position", "Press a button from the top"}
    state = json.loads((tmp_path / "mw" / "meta" / "vla_record.json").read_text())
    assert state["env"] == ",".join(names) and state["next_seed"] == summary.attempted
    with pytest.raises(ValueError, match="recorded from"):
        record(names[:1], 1, tmp_path / "mw", resume=True, progress=False)

    results = rollout_tasks("expert", names, episodes=1, n_envs=1, out=tmp_path / "roll", videos=0, progress=False)
    assert [r.env for r in results] == names
    report = json.loads((tmp_path / "roll" / "summary.json").read_text())
    assert report["episodes"] == 2 and set(report["per_env"]) == set(names)
    assert report["mean_success_rate"] == pytest.approx(sum(r.success_rate for r in results) / 2)
    assert (tmp_path / "roll" / "metaworld_reach" / "results.json").is_file()


def test_recording_with_hand_noise_moves_the_hand_off_the_experts_path_and_records_its_actions(tmp_path: Path) -> None:
    """DART on Meta-World: the hand is sent the expert's action plus drifting noise in hand units; each frame keeps
    the expert's action for the state the noisy path led to."""
    from lerobot.datasets import LeRobotDataset

    from vla.envs.collect import ActionNoise, record

    out = tmp_path / "reach"
    summary = record("metaworld/reach", 1, out, image_size=(16, 16), use_videos=False, progress=False,
                     action_noise=0.1)  # fmt: skip
    assert summary.saved == 1
    ds = LeRobotDataset("local/metaworld_reach", root=out)
    env = MetaWorldEnv("reach", image_size=(16, 16))
    expert = MetaWorldExpert(env)
    obs, _ = env.reset(seed=summary.attempted - 1)
    noise = ActionNoise(4, 0.1, seed=summary.attempted - 1)
    clean = MetaWorldEnv("reach", image_size=(16, 16), cameras=())
    clean.reset(seed=summary.attempted - 1)
    drift = []
    for index in range(ds.meta.episodes[0]["length"]):
        item = ds[index]
        np.testing.assert_array_equal(item["observation.state"].numpy(), obs["agent_pos"])
        stored = (item["observation.images.corner"].numpy() * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(stored, obs["pixels"]["corner"].transpose(2, 0, 1))  # lossless frames
        action = expert.act()
        np.testing.assert_array_equal(item["action"].numpy(), action)
        obs, *_ = env.step(noise(action))
        clean.step(action)  # the same actions without noise
        drift.append(np.linalg.norm(env.raw_obs[:3] - clean.raw_obs[:3]))
    assert max(drift) > 0.005  # the hand left the clean path by more than 5 mm somewhere


def test_start_noise_spreads_the_hands_start_by_seed_and_leaves_the_goal(tmp_path: Path) -> None:
    """From one start pose the hand's place along the expert's path gives the goal away (docs/learning.md); with
    `start_noise` each seed starts the hand elsewhere, within the spread, and keeps its goal; recording passes it."""
    from lerobot.datasets import LeRobotDataset

    from vla.envs.collect import record

    plain = MetaWorldEnv("reach", cameras=())
    spread = MetaWorldEnv("reach", cameras=(), start_noise=5.0)
    offsets = []
    for seed in range(4):
        plain.reset(seed=seed)
        spread.reset(seed=seed)
        np.testing.assert_array_equal(spread.raw_obs[36:39], plain.raw_obs[36:39])  # the same goal
        offsets.append(spread.raw_obs[:3] - plain.raw_obs[:3])
        first = spread.raw_obs.copy()
        spread.reset(seed=seed)
        np.testing.assert_array_equal(spread.raw_obs, first)  # reproducible
    offsets = np.array(offsets)
    assert np.abs(offsets).max() <= 0.051 and np.abs(offsets).max() > 0.02
    assert min(np.linalg.norm(a - b) for i, a in enumerate(offsets) for b in offsets[i + 1:]) > 0.005
    plain.reset(seed=5)
    home = plain.raw_obs[:3].copy()
    plain.reset(seed=6)
    np.testing.assert_allclose(plain.raw_obs[:3], home, atol=1e-4)  # the default keeps Meta-World's one start
    with pytest.raises(ValueError, match="start noise is in cm on each hand axis, from 0 to 10"):
        MetaWorldEnv("reach", cameras=(), start_noise=20.0)

    summary = record("metaworld/reach", 1, tmp_path / "spread", image_size=(16, 16), use_videos=False,
                     progress=False, start_noise=5.0)  # fmt: skip
    spread.reset(seed=summary.attempted - 1)
    item = LeRobotDataset("local/metaworld_reach", root=tmp_path / "spread")[0]
    np.testing.assert_allclose(item["observation.state"].numpy(), spread.raw_obs[:4].astype(np.float32))
    assert np.abs(item["observation.state"].numpy()[:3] - home).max() > 1e-3
    plain.close()
    spread.close()


def test_record_refuses_envs_whose_features_differ(tmp_path: Path) -> None:
    from vla.envs.collect import record

    with pytest.raises(ValueError, match=r"so101/reach cannot share a dataset with metaworld/reach: their features"):
        record(["metaworld/reach", "so101/reach"], 1, tmp_path / "mixed", image_size=(32, 32), progress=False)
    with pytest.raises(ValueError, match="listed twice"):
        record("metaworld/reach,metaworld/reach", 1, tmp_path / "twice", progress=False)
    with pytest.raises(ValueError, match=r"action noise 2.0 is in hand-motion units .* for metaworld/reach.* below 1"):
        record("metaworld/reach", 1, tmp_path / "noisy", progress=False, action_noise=2.0)
    assert not (tmp_path / "mixed" / "meta").exists() and not (tmp_path / "noisy" / "meta").exists()


def test_metaworld_renders_in_a_fresh_process_without_mujoco_gl() -> None:
    """Meta-World imports MuJoCo itself; unless our backend choice (`vla.sim.gl`) runs first, MuJoCo falls back to
    GLFW and rendering fails on a headless machine. `vla rollout` of a Meta-World task hit this: nothing else in the
    process had imported the SO-101 simulation."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    code = ("from vla.envs.metaworld import MetaWorldEnv\n"
            "obs, _ = MetaWorldEnv('reach', image_size=(16, 16)).reset(seed=0)\n"
            "print(obs['pixels']['corner'].shape)")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(16, 16, 3)" in done.stdout
