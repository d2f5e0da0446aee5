"""Env backends: dmc benchmark semantics against raw dm_control, point_reach, errors, probe."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fpac_async.config import ConfigError, EnvConfig, RunConfig, resolve
from actors.envs import FIRST, TERMINAL, TRUNCATED, StepBatch, VecEnv, make_vec_env
from actors.envs.render_probe import RenderingError, diagnose


def env_cfg(task: str, backend: str = "dmc", **kw) -> EnvConfig:
    return resolve(RunConfig(env=EnvConfig(task=task, backend=backend, **kw))).env


def raw_dmc(domain: str, task: str, seed: int):
    from dm_control import suite
    env = suite.load(domain, task, task_kwargs={"random": seed})
    return env, env.reset()


def actions(rng: np.random.Generator, n: int, a: int) -> np.ndarray:
    return rng.uniform(-1, 1, (n, a)).astype(np.float32)


# --- dmc -------------------------------------------------------------------------------------
def test_dmc_full_episode_is_1000_control_steps_truncated_then_first():
    env = make_vec_env(env_cfg("cartpole_swingup", image_size=16), seed=0, num_envs=1)
    assert env.action_repeat == 8
    b = env.reset()
    assert b.flags[0] == FIRST
    rng = np.random.default_rng(0)
    flags = [env.step(actions(rng, 1, 1)).flags[0] for _ in range(125)]
    assert flags[:124] == [0] * 124 and flags[124] == TRUNCATED  # 1000 / 8 agent steps
    after = env.step(actions(rng, 1, 1))
    assert after.flags[0] == FIRST and after.reward[0] == 0.0
    env.close()


def test_dmc_reward_is_sum_over_repeat_and_matches_raw_dm_control():
    env = make_vec_env(env_cfg("cartpole_swingup", image_size=16), seed=3, num_envs=2)
    b = env.reset()
    raws = [raw_dmc("cartpole", "swingup", 3 + i) for i in range(2)]  # env i gets seed + i
    from actors.envs.dmc import flat_state
    for i, (_, ts) in enumerate(raws):
        np.testing.assert_array_equal(b.state[i], flat_state(ts.observation))
    rng = np.random.default_rng(1)
    for _ in range(4):
        a = actions(rng, 2, 1)
        b = env.step(a)
        for i, (raw, _) in enumerate(raws):
            rewards = [raw.step(a[i].astype(np.float64)).reward for _ in range(8)]
            assert b.reward[i] == pytest.approx(sum(rewards), rel=1e-6, abs=1e-7)
            assert b.reward[i] != pytest.approx(rewards[-1]) or sum(rewards) == 0
    env.close()


def test_dmc_renders_exactly_once_per_agent_step(monkeypatch):
    from actors.envs import dmc
    calls = []
    original = dmc.Camera.render
    monkeypatch.setattr(dmc.Camera, "render", lambda self, *a, **k: (calls.append(1),
                                                                       original(self, *a, **k))[1])
    env = make_vec_env(env_cfg("cartpole_swingup", image_size=16), seed=0, num_envs=2)
    env.reset()
    assert len(calls) == 2
    for _ in range(3):
        env.step(np.zeros((2, 1), np.float32))
    assert len(calls) == 2 + 3 * 2  # not 8 per agent step
    env.close()


def test_dmc_deferred_reset_ignores_action_and_restarts():
    cfg = env_cfg("cartpole_swingup", image_size=16, episode_control_steps=16)
    frames = []
    for reset_action in (-1.0, 1.0):
        env = make_vec_env(cfg, seed=5, num_envs=1)
        env.reset()
        assert env.step(np.ones((1, 1), np.float32)).flags[0] == 0
        end = env.step(np.ones((1, 1), np.float32))
        assert end.flags[0] == TRUNCATED
        nxt = env.step(np.full((1, 1), reset_action, np.float32))
        assert nxt.flags[0] == FIRST and nxt.reward[0] == 0.0
        frames.append(nxt.frames[0].copy())
        env.close()
    np.testing.assert_array_equal(frames[0], frames[1])  # the reset step's action was ignored


@pytest.mark.parametrize("camera", [0, 1])
def test_dmc_camera_id_and_chw_layout_match_raw_render(camera):
    env = make_vec_env(env_cfg("cartpole_swingup", image_size=24, camera=camera), 7, 1)
    b = env.reset()
    raw, _ = raw_dmc("cartpole", "swingup", 7)
    expected = raw.physics.render(24, 24, camera_id=camera).transpose(2, 0, 1)
    np.testing.assert_array_equal(b.frames[0], expected)
    env.close()


def test_dmc_cam_offset_zero_for_a_fixed_camera():
    rng = np.random.default_rng(0)
    env = make_vec_env(env_cfg("cartpole_swingup", image_size=16), seed=0, num_envs=1)
    env.reset()
    cams = np.stack([env.step(actions(rng, 1, env.action_dim)).cam[0] for _ in range(5)])
    assert np.all(cams == 0)
    env.close()


# A green, fully emissive sphere (its colour does not change with the lights) added to the world.
MARKER = (b'<asset><material name="marker" rgba="0 1 0 1" emission="1" specular="0"/></asset>\n'
          b'  <worldbody>\n    <geom name="marker" type="sphere" pos="0 0 -5" size="0.1" '
          b'material="marker" contype="0" conaffinity="0"/>')


def with_marker(domain: str, task: str, task_kwargs: dict):
    """Stand-in for suite.load: the suite task with MARKER added to its world."""
    from dm_control.rl import control
    from dm_control.suite import cheetah, hopper, walker

    mod, make_task = {"cheetah": (cheetah, lambda r: cheetah.Cheetah(random=r)),
                      "walker": (walker, lambda r: walker.PlanarWalker(move_speed=1, random=r)),
                      "hopper": (hopper, lambda r: hopper.Hopper(hopping=True, random=r))}[domain]
    xml, assets = mod.get_model_and_assets()
    physics = mod.Physics.from_xml_string(xml.replace(b"<worldbody>", MARKER, 1), assets)
    return control.Environment(physics, make_task(task_kwargs["random"]), time_limit=1000)


def marker_pixel(frame: np.ndarray) -> np.ndarray:
    """(x, y) in pixels of the marker's centroid in a [3, H, W] frame (x right, y down)."""
    ys, xs = np.nonzero((frame[1] > 150) & (frame[0] < 80) & (frame[2] < 80))
    assert len(xs) > 10, "the marker is not in view"
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("task", ["cheetah_run", "walker_walk", "hopper_hop"])
def test_dmc_cam_offset_is_the_image_motion_of_static_content(task, monkeypatch):
    """`cam` (dx, dy) is how far static content in the robot's plane moved in the image: a static
    marker's centroid moves by cam (sign, axes and pixel scale) while the tracking camera follows
    the body 0.1 m forward and 0.04 m up per step. The marker sits at the height where the
    previous optical axis meets the plane (walker's camera looks down: higher content is nearer
    and moves more), 0.6 m ahead of it, clear of the body."""
    from actors.envs import dmc

    monkeypatch.setattr(dmc.suite, "load", with_marker)
    env = make_vec_env(env_cfg(task, image_size=84), seed=0, num_envs=1)
    try:
        env.reset()
        physics = env._envs[0].physics
        _, pos, forward = env._camera_pose(0)
        axis_point = pos - pos[1] / forward[1] * forward  # on the plane y = 0
        physics.named.model.geom_pos["marker"] = axis_point + [0.6, 0.0, 0.0]
        physics.forward()
        env._prev_pose[0] = env._camera_pose(0)
        before = marker_pixel(env._camera(0).render().transpose(2, 0, 1))
        shifts, cams = [], []
        for _ in range(4):
            physics.named.data.qpos["rootx"] += 0.1
            physics.named.data.qpos["rootz"] += 0.04
            physics.named.data.qvel[:] = 0.0
            step = env.step(np.zeros((1, env.action_dim), np.float32))
            after = marker_pixel(step.frames[0])
            assert step.cam[0][0] < -2 and step.cam[0][1] > 0.5, step.cam[0]  # it moved
            np.testing.assert_allclose(after - before, step.cam[0], atol=0.5)  # centroid noise
            shifts.append(after - before)
            cams.append(step.cam[0])
            _, pos, forward = env._camera_pose(0)  # the next step's axis point: same height
            physics.named.model.geom_pos["marker"][2] = (pos - pos[1] / forward[1] * forward)[2]
            physics.forward()
            before = marker_pixel(env._camera(0).render().transpose(2, 0, 1))
    finally:
        env.close()
    # On average over the steps the centroid's rounding shrinks: a scale error of 10% (e.g. the
    # image size off by 8 px) would leave > 0.33 px in x.
    np.testing.assert_allclose(np.mean(shifts, 0), np.mean(cams, 0), atol=0.25)


def test_project_hand_computed():
    from actors.envs.dmc import _project
    m = np.array([[2.0, 0, 1, 0], [0, 3.0, 1, 0], [0, 0, 1, 0]])
    np.testing.assert_allclose(_project(m, np.array([1.0, 1.0, 2.0, 1.0])), [2.0, 2.5])


# --- point_reach -----------------------------------------------------------------------------
def test_point_reach_shapes_reward_truncation_and_determinism():
    cfg = env_cfg("point_reach")
    a, b = (make_vec_env(cfg, seed=11, num_envs=3) for _ in range(2))
    assert (a.obs_shape, a.action_dim, a.state_dim, a.action_repeat) == ((3, 32, 32), 2, 4, 1)
    ba, bb = a.reset(), b.reset()
    np.testing.assert_array_equal(ba.frames, bb.frames)
    rng = np.random.default_rng(0)
    for t in range(50):
        act = actions(rng, 3, 2)
        prev = ba.state[:, :2].copy()
        ba, bb = a.step(act), b.step(act)
        np.testing.assert_array_equal(ba.frames, bb.frames)
        expected_pos = np.clip(prev + 0.2 * act, -1, 1)
        np.testing.assert_allclose(ba.state[:, :2], expected_pos, atol=1e-6)
        np.testing.assert_allclose(ba.reward, -np.linalg.norm(expected_pos, axis=1), atol=1e-6)
        assert ba.frames.dtype == np.uint8 and ba.frames.shape == (3, 3, 32, 32)
        assert np.all(ba.flags == (TRUNCATED if t == 49 else 0))
    assert np.all(a.step(act).flags == FIRST)
    c = make_vec_env(cfg, seed=12, num_envs=3)
    assert not np.array_equal(c.reset().state, a.reset().state)


def test_point_reach_draws_dot_where_the_state_says():
    env = make_vec_env(env_cfg("point_reach"), seed=0, num_envs=1)
    env.reset()
    env._pos[0] = [-1.0, 1.0]  # top-left corner
    b = env.step(np.zeros((1, 2), np.float32))
    assert tuple(b.frames[0, :, 0, 0]) == (255, 210, 40)  # dot colour at pixel (0, 0)
    assert tuple(b.frames[0, :, 31, 31]) == (16, 16, 24)  # background far away


# --- deferred auto-reset with envs ending at different times --------------------------------
class StaggeredEnv(VecEnv):
    """Env i's episode is i + 2 agent steps long; reward = its step count; frame = episode id."""

    num_envs, obs_shape, action_dim, state_dim, action_repeat = 3, (3, 2, 2), 1, 0, 1

    def __init__(self) -> None:
        self.t = np.zeros(3, int)
        self.episodes = np.zeros(3, int)
        super().__init__()

    def _reset_envs(self, ids, out):
        self.t[ids] = 0
        self.episodes[ids] += 1
        out.frames[ids] = self.episodes[ids, None, None, None]

    def _step_envs(self, ids, actions, out):
        self.t[ids] += 1
        out.reward[ids] = self.t[ids]
        out.frames[ids] = self.episodes[ids, None, None, None]
        out.flags[ids] = np.where(self.t[ids] >= ids + 2, TERMINAL, 0)


def test_deferred_reset_per_env():
    env = StaggeredEnv()
    with pytest.raises(RuntimeError):
        env.step(np.zeros((3, 1), np.float32))
    env.reset()
    seen = [env.step(np.zeros((3, 1), np.float32)) for _ in range(4)]
    flags = np.stack([s.flags for s in seen])
    np.testing.assert_array_equal(flags, [[0, 0, 0], [TERMINAL, 0, 0], [FIRST, TERMINAL, 0],
                                          [0, FIRST, TERMINAL]])
    assert seen[2].reward[0] == 0 and seen[2].frames[0].max() == 2  # new episode's frame
    assert isinstance(seen[0], StepBatch) and seen[0].state is None


# --- errors ----------------------------------------------------------------------------------
def test_clear_errors():
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        make_vec_env(EnvConfig(task="nope", action_repeat=1, image_size=8, camera=0,
                               episode_control_steps=10), 0, 1)
    bad_backend = env_cfg("cartpole_swingup")
    bad_backend.backend = "gym"
    with pytest.raises(ConfigError, match="backend must be one of"):
        make_vec_env(bad_backend, 0, 1)
    with pytest.raises(ConfigError, match="camera 9 does not exist"):
        make_vec_env(env_cfg("cartpole_swingup", camera=9, image_size=8), 0, 1)
    with pytest.raises(ConfigError, match="resolved"):
        make_vec_env(EnvConfig(task="cartpole_swingup"), 0, 1)
    with pytest.raises(ConfigError, match="runs on backend numpy"):
        make_vec_env(env_cfg("point_reach").__class__(**{**env_cfg("point_reach").__dict__,
                                                         "backend": "dmc"}), 0, 1)
    env = make_vec_env(env_cfg("point_reach"), 0, 2)
    env.reset()
    with pytest.raises(ValueError, match="expected shape"):
        env.step(np.zeros((2, 3), np.float32))


def test_render_probe_names_the_fix():
    assert "libegl1 libegl-mesa0 libgl1-mesa-dri" in str(
        diagnose("OSError: libEGL.so.1: cannot open shared object file", 1, "egl"))
    assert "libegl1" in str(diagnose("an OpenGL platform library has not been loaded", -6, "egl"))
    assert "MUJOCO_GL=egl" in str(diagnose("GLFW error: no display", 1, "glfw"))
    assert "EGL device" in str(diagnose("RuntimeError: Cannot initialize a EGL device display",
                                        1, "egl"))
    assert isinstance(diagnose("", -11, "egl"), RenderingError)


def test_render_probe_renders_in_child():
    from actors.envs.render_probe import probe_rendering
    assert probe_rendering("dmc", "cartpole_swingup")  # a renderer name, e.g. llvmpipe
    with pytest.raises(RenderingError, match="camera 4 does not exist"):
        probe_rendering("dmc", "cartpole_swingup", camera=4)


def test_dmc_origin_camera_measure_is_the_world_origins_image_motion(monkeypatch):
    """--camera-measure origin (the authors' dm_wrappers.py): cam is the image motion of the
    world origin; on walker's pitched camera that is not the motion of content at the body's
    depth (the default 'plane' measure), so the two differ. A marker at the origin moves by the
    origin measure. Catches: the origin measure left at the plane's, or its sign or axes."""
    from actors.envs import dmc

    monkeypatch.setattr(dmc.suite, "load", with_marker)
    cfg = dataclasses.replace(env_cfg("walker_walk", image_size=84), camera_measure="origin")
    env = make_vec_env(cfg, seed=0, num_envs=1)
    plane = make_vec_env(env_cfg("walker_walk", image_size=84), seed=0, num_envs=1)
    try:
        for e in (env, plane):
            e.reset()
            e._envs[0].physics.named.model.geom_pos["marker"] = [0.0, 0.0, 0.0]
            e._envs[0].physics.forward()
            e._prev_pose[0] = e._camera_pose(0)
        before = marker_pixel(env._camera(0).render().transpose(2, 0, 1))
        for _ in range(3):
            for e in (env, plane):
                e._envs[0].physics.named.data.qpos["rootx"] += 0.1
                e._envs[0].physics.named.data.qvel[:] = 0.0
            step = env.step(np.zeros((1, env.action_dim), np.float32))
            other = plane.step(np.zeros((1, plane.action_dim), np.float32))
            after = marker_pixel(step.frames[0])
            assert step.cam[0][0] < -2, step.cam[0]  # the camera followed the body
            np.testing.assert_allclose(after - before, step.cam[0], atol=0.6)
            assert abs(step.cam[0][0] - other.cam[0][0]) > 0.1 * abs(other.cam[0][0])
            before = after
    finally:
        env.close()
        plane.close()
