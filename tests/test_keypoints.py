"""Handcrafted keypoints (the SAC-keypoints baseline, fpac_async/agent/keypoints.py, docs/BASELINES.md).

- The camera matrix computed from the physics is dm_control's Camera(...).matrix (fixed camera
  and cheetah's tracking camera), without any renderer.
- Each projected keypoint lands on its own geom in a segmentation render of the same camera
  (within 2 pixels) on real DMC cartpole, reacher and cheetah, over random-action steps.
- The velocity is camera-compensated: a static world point seen by cheetah's moving camera has
  zero velocity though its pixel moves.
- The dmc env with --state-source keypoints (render=False: nothing renders) streams exactly
  keypoint_state of its geoms; point_reach's keypoints sit on the rendered dot and target.
- The config refuses keypoints without --encoder state, or on envpool; actor and learner must
  agree on the state source; SAC on point_reach's keypoints learns (serial path).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from actors.envs import make_vec_env
from fpac_async.agent import keypoints as K
from fpac_async.config import ConfigError, EnvConfig, RunConfig, AgentConfig, resolve
from fpac_async.settings import mismatches, run_settings

SIZE = 84


def dmc_env(domain: str, task: str, seed: int = 1):
    from dm_control import suite  # noqa: PLC0415 (after MUJOCO_GL)
    env = suite.load(domain, task, task_kwargs={"random": seed})
    env.reset()
    return env


def random_steps(env, steps: int, seed: int = 0):
    """Yield after each of `steps` uniform random actions."""
    rng = np.random.default_rng(seed)
    spec = env.action_spec()
    for step in range(steps):
        env.step(rng.uniform(spec.minimum, spec.maximum))
        yield step


@pytest.mark.parametrize("domain,task", [("cartpole", "swingup"), ("cheetah", "run")])
def test_camera_matrix_from_the_physics_is_dm_controls(domain, task):
    from dm_control.mujoco import Camera  # noqa: PLC0415
    env = dmc_env(domain, task)
    for step in random_steps(env, 20):
        if step % 5 == 0:
            want = Camera(env.physics, SIZE, SIZE, camera_id=0).matrix
            got = K.camera_matrix(env.physics, 0, SIZE, SIZE)
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("domain,task", [("cartpole", "swingup"), ("reacher", "easy"),
                                         ("cheetah", "run")])
def test_each_keypoint_lands_on_its_geom_in_a_segmentation_render(domain, task):
    env = dmc_env(domain, task)
    keypoints = K.DmcKeypoints(env.physics, domain, 0, SIZE)
    checked = 0
    for step in random_steps(env, 60):
        if step % 6:
            continue
        # segmentation=True: per pixel (object id, object type); geoms' ids are geom ids.
        seg = env.physics.render(SIZE, SIZE, camera_id=0, segmentation=True)[..., 0]
        for k, (u, v) in enumerate(K.pixel_positions(keypoints, env.physics)):
            col, row = int(round(u)), int(round(v))
            if not (0 <= col < SIZE and 0 <= row < SIZE):
                continue  # e.g. the cart has left the view
            window = seg[max(row - 2, 0):row + 3, max(col - 2, 0):col + 3]
            name = K.KEYPOINT_GEOMS[domain][k]
            assert (window == keypoints.geom_ids[k]).any(), (
                f"{domain} step {step}: keypoint {name} at pixel ({col}, {row}) is not within 2 "
                f"pixels of its geom; ids there: {np.unique(window)}")
            checked += 1
    assert checked >= 10 * len(K.KEYPOINT_GEOMS[domain]) * 0.8


def test_velocity_cancels_the_tracking_cameras_motion(monkeypatch):
    # The ground plane's centre (the world origin) never moves; cheetah's camera 0 follows the
    # body, so the ground's pixel moves, but its camera-compensated velocity must stay zero.
    monkeypatch.setitem(K.KEYPOINT_GEOMS, "cheetah", ("ground", "torso"))
    env = dmc_env("cheetah", "run")
    keypoints = K.DmcKeypoints(env.physics, "cheetah", 0, SIZE, relative=False)
    keypoints.reset(env.physics)
    first_pixel = K.pixel_positions(keypoints, env.physics)[0]
    torso_speed = 0.0
    for _ in random_steps(env, 40):
        state = keypoints.step(env.physics)
        positions, velocity = state[:4].reshape(2, 2), state[4:].reshape(2, 2)
        np.testing.assert_allclose(velocity[0], 0.0, atol=1e-6)
        torso_speed += float(np.abs(velocity[1]).sum())
    camera_shift = np.abs(K.pixel_positions(keypoints, env.physics)[0] - first_pixel).max()
    assert camera_shift > 1.0, "the camera did not move: the test shows nothing"
    assert torso_speed > 0.0
    np.testing.assert_allclose(positions[0], K.to_image_units(
        K.pixel_positions(keypoints, env.physics)[0], SIZE, SIZE), atol=1e-5)


def keypoints_env_cfg(task: str, **kw) -> EnvConfig:
    cfg = RunConfig(agent=AgentConfig(encoder="state"),
                    env=EnvConfig(task=task, state_source="keypoints", **kw))
    return resolve(cfg).env


def test_dmc_env_streams_the_keypoint_state_without_rendering():
    from dm_control.mujoco import Camera  # noqa: PLC0415
    env = make_vec_env(keypoints_env_cfg("reacher_easy"), seed=3, num_envs=2, render=False)
    names = K.KEYPOINT_GEOMS["reacher"]
    assert env.state_dim == 4 * len(names) and not env.renders
    batch = env.reset()
    assert batch.frames is None
    np.testing.assert_allclose(batch.state[:, 2 * len(names):], 0.0)  # first step: no velocity
    physics = env._envs[1].physics  # noqa: SLF001 - the test reads the physics the env stepped
    ids = [physics.model.name2id(n, "geom") for n in names]
    rng = np.random.default_rng(0)
    for _ in range(5):
        prev_xyz = physics.data.geom_xpos[ids].copy()
        batch = env.step(rng.uniform(-1, 1, (2, env.action_dim)).astype(np.float32))
        matrix = Camera(physics, SIZE, SIZE, camera_id=0).matrix  # the independent path
        now = K.to_image_units(K.project(matrix, physics.data.geom_xpos[ids]), SIZE, SIZE)
        prev = K.to_image_units(K.project(matrix, prev_xyz), SIZE, SIZE)
        want = np.concatenate([(now - now.mean(0)).ravel(), (now - prev).ravel()])
        np.testing.assert_allclose(batch.state[1], want, atol=1e-5)
    env.close()


def test_point_reach_keypoints_sit_on_the_rendered_dot_and_target():
    from actors.envs.point_reach import DOT_COLOUR  # noqa: PLC0415
    cfg = keypoints_env_cfg("point_reach")
    env = make_vec_env(cfg, seed=5, num_envs=3)
    size = cfg.image_size
    rng = np.random.default_rng(1)
    batch = env.reset()
    for _ in range(8):
        prev_pos = env._pos.copy()  # noqa: SLF001
        batch = env.step(rng.uniform(-1, 1, (3, 2)).astype(np.float32))
        for i in range(3):
            dot = np.all(batch.frames[i] == DOT_COLOUR[:, None, None], axis=0)
            rows, cols = np.nonzero(dot)
            pixels = K.project(env.pixel_matrix(), np.array([[*env._pos[i], 0.0],  # noqa: SLF001
                                                            [0.0, 0.0, 0.0]]))
            # The dot's drawn square (clipped at the border) contains its keypoint's pixel.
            assert rows.min() - 0.5 <= pixels[0, 1] <= rows.max() + 0.5
            assert cols.min() - 0.5 <= pixels[0, 0] <= cols.max() + 0.5
            np.testing.assert_allclose(pixels[1], [(size - 1) / 2] * 2)  # the target's centre
            units = K.to_image_units(pixels, size, size)
            np.testing.assert_allclose(batch.state[i, :4], (units - units.mean(0)).ravel(),
                                       atol=1e-5)
            moved = (env._pos[i] - prev_pos[i]) * (size - 1) / size  # noqa: SLF001
            np.testing.assert_allclose(batch.state[i, 4:6], moved * [1, -1], atol=1e-5)
            np.testing.assert_allclose(batch.state[i, 6:], 0.0)  # the target never moves


def test_config_refuses_keypoints_without_the_state_encoder_or_on_envpool():
    with pytest.raises(ConfigError, match="--encoder state"):
        resolve(RunConfig(env=EnvConfig(task="cartpole_swingup", state_source="keypoints")))
    with pytest.raises(ConfigError, match="envpool"):
        resolve(RunConfig(agent=AgentConfig(encoder="state"),
                          env=EnvConfig(task="cartpole_swingup", backend="envpool",
                                        state_source="keypoints")))
    with pytest.raises(ConfigError, match="state_source"):
        resolve(RunConfig(env=EnvConfig(task="cartpole_swingup", state_source="pixels")))


@pytest.mark.parametrize("task", ["point_reach", "cartpole_swingup", "cheetah_run"])
def test_the_learner_expects_the_keypoint_state_the_env_sends(task):
    from learner.task_shapes import task_shapes  # noqa: PLC0415
    cfg = resolve(RunConfig(agent=AgentConfig(encoder="state"),
                            env=EnvConfig(task=task, state_source="keypoints")))
    env = make_vec_env(cfg.env, seed=0, num_envs=1, render=False)
    assert task_shapes(cfg).state_dim == env.state_dim
    env.close()


def test_actor_and_learner_must_agree_on_the_state_source():
    learner = run_settings(keypoints_env_cfg("point_reach"), 2, "state")
    actor = run_settings(resolve(RunConfig(agent=AgentConfig(encoder="state"),
                                           env=EnvConfig(task="point_reach"))).env, 2, "state")
    assert mismatches(learner, actor) == ["--state-source 'default' (learner: 'keypoints')"]


@pytest.mark.slow
def test_sac_learns_point_reach_from_its_keypoints():
    from deploy.serial import run_serial, tiny_config  # noqa: PLC0415
    cfg = tiny_config(seed=0)
    cfg = resolve(dataclasses.replace(
        cfg, agent=dataclasses.replace(cfg.agent, encoder="state"),
        env=dataclasses.replace(cfg.env, state_source="keypoints")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_serial(cfg, agent_steps=1500, eval_every=1500, eval_episodes=10,
                            log=lambda line: None)
    finally:
        torch.set_num_threads(threads)
    (_, final), = result["eval_returns"][-1:]
    random_return = result["random_return"]
    # Rewards are -distance to the centre (best return 0): close at least half the gap from the
    # uniform random policy's return (about -40 over an episode) to 0.
    assert final > 0.5 * random_return, (final, random_return)


@pytest.mark.slow
def test_fpac_train_runs_sac_on_keypoints_through_the_service(tmp_path):
    # The real service: learner + actor + evaluator processes over loopback. The learner must
    # accept the actor's keypoint state (it once refused it: state_dim 8, expected 4).
    import json  # noqa: PLC0415
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    run_dir = str(tmp_path / "run")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-m", "deploy.train_cli", "--task", "point_reach", "--encoder", "state",
         "--state-source", "keypoints", "--env-steps", "700", "--actors", "1", "--gpus", "0",
         "--replay-ratio", "0.25", "--no-gif", "--run-dir", run_dir],
        cwd=repo, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "refus" not in proc.stderr
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        last = [json.loads(line) for line in f][-1]
    assert last["env_steps"] >= 700 and last["updates"] > 0
    with open(os.path.join(run_dir, "config.json")) as f:
        assert json.load(f)["env"]["state_source"] == "keypoints"
