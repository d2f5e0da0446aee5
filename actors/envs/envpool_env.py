"""`envpool` backend (envpool 1.2.5): the DMC suite in C++, stepped with benchmark semantics.

How it is built, and why (DESIGN.md section 2 and envpool's registration.py):
- libEGL is loaded with RTLD_GLOBAL before envpool is imported; without it envpool aborts the
  whole process ("an OpenGL platform library has not been loaded").
- envpool's `frame_skip` is NOT action repeat: it replaces the task's physics substeps, returns
  only the last control step's reward and keeps episodes at 1000 env steps. We therefore make
  the env with frame_skip=1 and max_episode_steps = episode_control_steps, step it R times
  with the same action and sum the rewards (the benchmark's action repeat).
- Pixels: the env is the STATE env with render_mode='rgb_array'; after the R control steps we
  call `render(env_ids)` once, so, as in the dmc backend, skipped control steps are never
  rendered (from_pixels=True would render every control step: R times the cost). The state
  observation comes for free, so `state` is provided (dict flattened in sorted-key order, the
  same order as the dmc backend).
- Envs are stepped as subsets (`step(action, env_id)`): an env that terminates mid-repeat is not
  stepped again (envpool would auto-reset it), and a reset touches only the envs that ended.
- End flags map from gymnasium: terminated -> TERMINAL, truncated -> TRUNCATED.
- Env i is seeded with seed + i (explicit per-env seeds).

Remaining differences from the dmc backend (also asserted/recorded in tests/test_backend_parity.py):
- ball_in_cup_catch is refused: envpool's reward uses the wrong ball radius.
- Initial states differ for the same seed (different RNGs); physics agree once the state is
  copied across, until contacts diverge.
- envpool bundles MuJoCo 3.6, whose floor/skybox render differently from MuJoCo >= 3.12 used by
  dm_control (reacher differs most); the camera ids are the same (camera 0, quadruped 2).
- `render_quality` 'fast' is not available (the model lives in C++); `cam` is always zero
  (no access to the camera pose), so the camera-offset ablation needs the dmc backend.

render=False: the state env is made without a render mode and `render` is never called (frames
None); libEGL is still loaded first, as envpool's import may touch GL.
"""
from __future__ import annotations

import ctypes
import os

import numpy as np

from fpac_async.config import ConfigError
from fpac_async.tasks import TaskSpec
from actors.envs.base import TERMINAL, TRUNCATED, StepBatch, VecEnv

REFUSED_TASKS = {
    "ball_in_cup_catch": "envpool's BallInCupCatch reward uses the wrong ball radius, so its "
                         "returns are not comparable to the benchmark; use backend 'dmc'",
}


def load_envpool():
    """Import envpool after making libEGL's symbols global (else envpool aborts the process)."""
    try:
        ctypes.CDLL("libEGL.so.1", mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        raise ConfigError("envpool rendering needs libEGL.so.1: install the Debian packages "
                          f"libegl1 libegl-mesa0 libgl1-mesa-dri ({e})") from None
    import envpool  # noqa: PLC0415 (must follow the libEGL load)
    return envpool


def envpool_task_id(spec: TaskSpec) -> str:
    """'ball_in_cup', 'catch' -> 'BallInCupCatch-v1' (envpool's dmc registration naming)."""
    camel = lambda s: "".join(g[:1].upper() + g[1:] for g in s.split("_"))  # noqa: E731
    return f"{camel(spec.domain)}{camel(spec.task)}-v1"


def _camera_count(envpool_module, domain: str) -> int:
    import mujoco  # noqa: PLC0415
    root = os.path.dirname(os.path.dirname(envpool_module.__file__))
    xml = os.path.join(root, "envpool_assets", "mujoco", "assets_dmc", f"{domain}.xml")
    return mujoco.MjModel.from_xml_path(xml).ncam


def _flat(obs: dict, row: int) -> np.ndarray:
    return np.concatenate([np.asarray(obs[k][row], np.float64).ravel()
                           for k in sorted(obs)]).astype(np.float32)


class EnvpoolVecEnv(VecEnv):
    """N envpool DMC envs in one envpool (its own C++ threads step them)."""

    provides_cam = False

    def __init__(self, spec: TaskSpec, num_envs: int, seed: int, action_repeat: int,
                 image_size: int, camera: int, episode_control_steps: int,
                 render_quality: str = "benchmark", num_threads: int = 1,
                 render: bool = True) -> None:
        if spec.name in REFUSED_TASKS:
            raise ConfigError(f"task {spec.name} on backend 'envpool': {REFUSED_TASKS[spec.name]}")
        if render_quality != "benchmark":
            raise ConfigError("backend 'envpool' supports only render_quality='benchmark'")
        envpool = load_envpool()
        ncam = _camera_count(envpool, spec.domain)
        if not 0 <= camera < ncam:
            raise ConfigError(f"camera {camera} does not exist for {spec.name}: the model has "
                              f"{ncam} cameras (ids 0..{ncam - 1})")
        self.num_envs = num_envs
        self.action_repeat = action_repeat
        self.obs_shape = (3, image_size, image_size)
        self.renders = bool(render)
        render_kwargs = dict(render_mode="rgb_array", render_width=image_size,
                             render_height=image_size, render_camera_id=camera) if render else {}
        self._env = envpool.make(
            envpool_task_id(spec), env_type="gymnasium", num_envs=num_envs,
            seed=[seed + i for i in range(num_envs)], num_threads=num_threads,
            frame_skip=1, max_episode_steps=episode_control_steps, **render_kwargs)
        self.action_dim = int(self._env.action_space.shape[0])
        self.state_dim = int(sum(int(np.prod(s.shape))
                                 for s in self._env.observation_space.spaces.values()))
        super().__init__()

    def _write(self, obs: dict, env_id: np.ndarray, out: StepBatch) -> None:
        for row, i in enumerate(env_id):
            out.state[i] = _flat(obs, row)

    def _render_into(self, ids: np.ndarray, out: StepBatch) -> None:
        if not self.renders:
            return
        frames = self._env.render(env_ids=ids)  # [n, H, W, 3] uint8, one render per env
        out.frames[ids] = frames.transpose(0, 3, 1, 2)

    def _reset_envs(self, ids: np.ndarray, out: StepBatch) -> None:
        obs, info = self._env.reset(ids.astype(np.int32))
        self._write(obs, info["env_id"], out)
        self._render_into(ids, out)

    def _step_envs(self, ids: np.ndarray, actions: np.ndarray, out: StepBatch) -> None:
        action_of = {int(i): a for i, a in zip(ids, actions.astype(np.float64))}
        active = ids.astype(np.int32)
        total = np.zeros(self.num_envs, np.float64)  # summed in float64, like the dmc backend
        for _ in range(self.action_repeat):
            act = np.stack([action_of[int(i)] for i in active])
            obs, reward, terminated, truncated, info = self._env.step(act, active)
            env_id = info["env_id"]
            total[env_id] += reward
            self._write(obs, env_id, out)
            out.flags[env_id] = np.where(terminated, TERMINAL, np.where(truncated, TRUNCATED, 0))
            active = env_id[~(terminated | truncated)]  # ended envs are not stepped again
            if active.size == 0:
                break
        out.reward[ids] = total[ids]
        self._render_into(ids, out)

    def close(self) -> None:
        if getattr(self, "_env", None) is not None:
            self._env.close()
            self._env = None
