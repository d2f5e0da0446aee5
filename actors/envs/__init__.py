"""Environment backends behind one interface: `make_vec_env(env_cfg, seed, num_envs) -> VecEnv`.

Backends: 'dmc' (dm_control, the reference), 'envpool' (C++ DMC, see envpool_env.py for its
documented differences) and 'numpy' (tasks shipped with the package: point_reach). Backend
modules are imported lazily so that a machine without EGL can still run the numpy task.
"""
from __future__ import annotations

from fpac_async.config import ConfigError, EnvConfig, task_spec
from actors.envs.base import FIRST, TERMINAL, TRUNCATED, StepBatch, VecEnv

BACKENDS = ("dmc", "envpool", "numpy")
NUMPY_TASKS = ("point_reach",)

__all__ = ["make_vec_env", "VecEnv", "StepBatch", "FIRST", "TERMINAL", "TRUNCATED", "BACKENDS"]


def make_vec_env(env_cfg: EnvConfig, seed: int, num_envs: int,
                 render_quality: str | None = None, render: bool = True) -> VecEnv:
    """Build `num_envs` envs of a RESOLVED env config (fpac_async.config.resolve); env i gets
    seed + i. render_quality: 'benchmark' (default, faithful) or 'fast' (dmc only: 512 shadow
    map, no multisampling). render=False: the envs never render (no GL context is made) and
    their StepBatches carry frames=None and the state: for encoders that need no pixels."""
    spec = task_spec(env_cfg.task)  # ConfigError naming the known tasks
    render_quality = render_quality or env_cfg.render_quality
    if env_cfg.backend not in BACKENDS:
        raise ConfigError(f"env.backend must be one of {', '.join(BACKENDS)}; "
                          f"got {env_cfg.backend!r}")
    if env_cfg.action_repeat < 1 or env_cfg.image_size < 1 or env_cfg.camera < 0 \
            or env_cfg.episode_control_steps < 1:
        raise ConfigError("make_vec_env needs a resolved EnvConfig (fpac_async.config.resolve): "
                          f"got {env_cfg}")
    if num_envs < 1:
        raise ConfigError(f"num_envs must be >= 1; got {num_envs}")
    if (spec.backend == "numpy") != (env_cfg.backend == "numpy"):
        raise ConfigError(f"task {spec.name!r} runs on backend "
                          f"{'numpy' if spec.backend == 'numpy' else 'dmc or envpool'}, "
                          f"not {env_cfg.backend!r}")
    common = dict(spec=spec, num_envs=num_envs, seed=seed, action_repeat=env_cfg.action_repeat,
                  image_size=env_cfg.image_size, camera=env_cfg.camera,
                  episode_control_steps=env_cfg.episode_control_steps,
                  render_quality=render_quality, render=render)
    keypoints = env_cfg.state_source == "keypoints"  # handcrafted keypoints as the state
    if keypoints and env_cfg.backend == "envpool":
        raise ConfigError("state_source 'keypoints' needs the physics: use backend dmc")
    if env_cfg.backend == "dmc":
        from actors.envs.dmc import DmcVecEnv  # noqa: PLC0415 (sets MUJOCO_GL before dm_control)
        return DmcVecEnv(**common, keypoints=keypoints, camera_measure=env_cfg.camera_measure)
    if env_cfg.backend == "envpool":
        from actors.envs.envpool_env import EnvpoolVecEnv  # noqa: PLC0415
        return EnvpoolVecEnv(**common)
    if env_cfg.action_repeat != 1 or env_cfg.camera != 0 or render_quality != "benchmark":
        raise ConfigError("point_reach has action_repeat 1, camera 0 and one render quality")
    from actors.envs.point_reach import PointReachVecEnv  # noqa: PLC0415
    return PointReachVecEnv(num_envs=num_envs, seed=seed, image_size=env_cfg.image_size,
                            episode_steps=env_cfg.episode_control_steps, render=render,
                            keypoints=keypoints)
