"""dmc vs envpool: same shapes, episode length, reward sums over the action repeat and images.

Known, documented differences (see actors/envs/envpool_env.py):
- The same seed gives different initial states, so each test copies envpool's initial state
  into a raw dm_control env (cartpole: qpos = (x, atan2(sin, cos)); cheetah: qpos = (0, position),
  the root x is not observed and does not affect the dynamics or the reward) and then compares.
- Images: envpool bundles MuJoCo 3.6 (dm_control here uses MuJoCo >= 3.17), whose floor/skybox
  renders differently. Rendering the SAME state with camera 0 at 48 px, pixel by pixel: at most
  0.1% of pixels differed by more than 24 levels in some channel (cartpole 0%, cheetah 0-0.1%);
  the other env's frame differs on 2-4%, a horizontally flipped frame on 6-7%, a transposed or
  vertically flipped one on 50-70%. We allow 0.5% (MAX_DIFFERENT).
- ball_in_cup_catch is refused on envpool (wrong ball radius in its reward).
- envpool gives cam = 0 (no camera pose access); state is provided by both.
The rendering tests are skipped, with the reason, when envpool cannot render here; the refusal
test needs no rendering and always runs.
"""
from __future__ import annotations

import numpy as np
import pytest

from fpac_async.config import ConfigError, EnvConfig, RunConfig, resolve
from actors.envs import FIRST, TRUNCATED, make_vec_env
from actors.envs.render_probe import RenderingError, probe_rendering

PIXEL_TOL = 24  # levels out of 255: a pixel differs when some channel differs by more
MAX_DIFFERENT = 0.005  # fraction of such pixels allowed between the backends' frames


@pytest.fixture(scope="module")
def envpool_renders():
    try:
        probe_rendering("envpool", "cartpole_swingup")
    except RenderingError as e:
        pytest.skip(f"envpool cannot render here: {e}")


def different(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of pixels of two [3, H, W] frames that differ by more than PIXEL_TOL."""
    return float((np.abs(a.astype(np.int16) - b.astype(np.int16)).max(0) > PIXEL_TOL).mean())


def env_cfg(task: str, backend: str, size: int = 48) -> EnvConfig:
    return resolve(RunConfig(env=EnvConfig(task=task, backend=backend, image_size=size))).env


def raw_with_state_of(task: str, state: np.ndarray):
    """A raw dm_control env put into the state that envpool's observation describes."""
    from dm_control import suite
    domain, name = task.split("_", 1)
    raw = suite.load(domain, name, task_kwargs={"random": 0})
    raw.reset()
    physics = raw.physics
    with physics.reset_context():
        if domain == "cartpole":  # sorted obs: position (x, cos, sin), velocity (2)
            physics.data.qpos[:] = [state[0], np.arctan2(state[2], state[1])]
            physics.data.qvel[:] = state[3:5]
        else:  # cheetah: position = qpos[1:] (8), velocity = qvel (9)
            physics.data.qpos[:] = np.concatenate([[0.0], state[:8]])
            physics.data.qvel[:] = state[8:]
    return raw


@pytest.fixture(scope="module")
def cartpole_pair(envpool_renders):
    """One dmc and one envpool cartpole_swingup env (envpool's render is ~40 ms a call here)."""
    envs = [make_vec_env(env_cfg("cartpole_swingup", b), 0, 1) for b in ("dmc", "envpool")]
    yield envs
    for e in envs:
        e.close()


def test_shapes_and_dtypes_agree(cartpole_pair):
    batches = [e.reset() for e in cartpole_pair]
    for attr in ("obs_shape", "action_dim", "state_dim", "action_repeat", "num_envs"):
        assert getattr(cartpole_pair[0], attr) == getattr(cartpole_pair[1], attr), attr
    for field in ("frames", "reward", "flags", "state", "cam"):
        a, b = getattr(batches[0], field), getattr(batches[1], field)
        assert (a.dtype, a.shape) == (b.dtype, b.shape), field


def test_envpool_episode_length_in_agent_steps(cartpole_pair):
    env = cartpole_pair[1]
    env.reset()
    rng = np.random.default_rng(0)
    flags = np.stack([env.step(rng.uniform(-1, 1, (1, 1)).astype(np.float32)).flags
                      for _ in range(126)])
    assert np.all(flags[:124] == 0)
    assert np.all(flags[124] == TRUNCATED) and np.all(flags[125] == FIRST)  # 1000 / 8 steps


@pytest.mark.parametrize("task,steps", [("cartpole_swingup", 30), ("cheetah_run", 10)])
def test_reward_sums_and_images_match_from_the_same_state(task, steps, envpool_renders):
    """Two envs (different seeds), each against a raw dm_control env in its state: rewards summed
    over the repeat, states, and frames pixel by pixel (after reset and after the steps)."""
    from dm_control.mujoco import Camera
    from actors.envs.dmc import flat_state
    env = make_vec_env(env_cfg(task, "envpool"), 0, 2)
    b = env.reset()
    raws = [raw_with_state_of(task, b.state[i]) for i in range(2)]

    def check_frames(frames: np.ndarray) -> None:
        for i, raw in enumerate(raws):
            dmc_frame = Camera(raw.physics, 48, 48, 0).render().transpose(2, 0, 1)
            assert different(frames[i], dmc_frame) <= MAX_DIFFERENT, (task, i)
            # The criterion tells wrong frames apart: flipped, transposed, the other env's.
            for wrong in (frames[i][:, :, ::-1], frames[i][:, ::-1], frames[i].transpose(0, 2, 1),
                          frames[1 - i]):
                assert different(wrong, dmc_frame) > 2 * MAX_DIFFERENT, (task, i)

    for i, raw in enumerate(raws):
        np.testing.assert_allclose(flat_state(raw._task.get_observation(raw.physics)), b.state[i],
                                   atol=1e-5)
    check_frames(b.frames)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        a = rng.uniform(-1, 1, (2, env.action_dim)).astype(np.float32)
        b = env.step(a)
        for i, raw in enumerate(raws):
            rewards = [raw.step(a[i].astype(np.float64)).reward for _ in range(env.action_repeat)]
            assert b.reward[i] == pytest.approx(sum(rewards), rel=1e-4, abs=1e-5)
            np.testing.assert_allclose(b.state[i],
                                       flat_state(raw._task.get_observation(raw.physics)),
                                       atol=1e-3)
    check_frames(b.frames)
    env.close()


def test_envpool_refuses_ball_in_cup_catch():
    with pytest.raises(ConfigError, match="wrong ball radius"):
        make_vec_env(env_cfg("ball_in_cup_catch", "envpool"), 0, 1)
