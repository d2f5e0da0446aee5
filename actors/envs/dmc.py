"""`dmc` backend: DeepMind Control Suite (dm_control) with benchmark-faithful pixels.

Per agent step: `action_repeat` control steps with the same action, rewards summed, then ONE
render (skipped control steps are never rendered). Episodes last `episode_control_steps`
control steps; that end is a time limit, flagged TRUNCATED (dm_control keeps discount 1.0
there), while a dm_control discount of 0 is flagged TERMINAL. Env i is seeded with seed + i.

Rendering: one persistent `dm_control.mujoco.Camera` per env (its pixel buffer is allocated
once); the frame is flipped/transposed straight into the batch's CHW array. `render_quality`
'benchmark' (default) keeps the model's shadow map and 4x multisampling; 'fast' uses a 512
shadow map and no multisampling (DESIGN.md section 2: 3-4x faster, ~0.5-1.7/255 pixel change).

cam: for tasks whose camera tracks the body (TaskSpec.camera_moves), the pixel motion of static
scene content between the previous and the current frame: the point where the previous frame's
optical axis meets the robot's plane (world y = 0) is projected with the camera matrix at both
times; the difference is (dx, dy) in pixels of the rendered image. Zero for fixed cameras.
camera_measure 'origin' projects the world origin instead (the authors' dm_wrappers.py; without
their uint8 quantisation): exact for a camera that only translates parallel to the image plane,
but walker's camera is pitched, and the origin is far from the body once it has travelled.

render=False (encoders that need no pixels): no Camera and no GL context is ever made, frames are
None and cam is zero; an agent step is then only the physics (plus the state's flattening).

keypoints=True: the state is the handcrafted keypoints of fpac_async/agent/keypoints.py (the
SAC-keypoints baseline), projected with the render camera's matrix computed from the physics.
"""
from __future__ import annotations

import os

if "MUJOCO_GL" not in os.environ:  # must precede the dm_control import; a user's choice wins
    os.environ["MUJOCO_GL"] = "egl"

import numpy as np
from dm_control import suite
from dm_control.mujoco import Camera

from fpac_async.config import ConfigError
from fpac_async.tasks import TaskSpec
from fpac_async.agent.keypoints import DmcKeypoints
from actors.envs.base import TERMINAL, TRUNCATED, StepBatch, VecEnv

RENDER_QUALITIES = ("benchmark", "fast")
CAMERA_MEASURES = ("plane", "origin")
_WORLD_ORIGIN = np.array([0.0, 0.0, 0.0, 1.0])


def flat_state(observation: dict) -> np.ndarray:
    """The DMC observation dict flattened in sorted-key order (the SAC-state input)."""
    return np.concatenate([np.asarray(observation[k], np.float64).ravel()
                           for k in sorted(observation)]).astype(np.float32)


class DmcVecEnv(VecEnv):
    """N dm_control suite environments stepped in one process."""

    def __init__(self, spec: TaskSpec, num_envs: int, seed: int, action_repeat: int,
                 image_size: int, camera: int, episode_control_steps: int,
                 render_quality: str = "benchmark", render: bool = True,
                 keypoints: bool = False, camera_measure: str = "plane") -> None:
        if camera_measure not in CAMERA_MEASURES:
            raise ConfigError(f"camera_measure must be one of {CAMERA_MEASURES}; "
                              f"got {camera_measure!r}")
        self.camera_measure = camera_measure
        if render_quality not in RENDER_QUALITIES:
            raise ConfigError(f"render_quality must be one of {RENDER_QUALITIES}; "
                              f"got {render_quality!r}")
        if episode_control_steps % action_repeat:
            raise ConfigError("episode_control_steps must be a multiple of action_repeat")
        self.num_envs = num_envs
        self.action_repeat = action_repeat
        self.obs_shape = (3, image_size, image_size)
        self.episode_control_steps = episode_control_steps
        self.camera = camera
        self.camera_moves = spec.camera_moves
        self.renders = bool(render)
        self.provides_cam = self.renders  # the camera motion comes from the render camera
        self._envs = [suite.load(spec.domain, spec.task, task_kwargs={"random": seed + i})
                      for i in range(num_envs)]
        for env in self._envs:
            # Our own control-step counter ends episodes, so any episode length is exact.
            # dm_control 1.0.x keeps its limit in _step_limit (some tasks pass time_limit
            # themselves, so it cannot go through environment_kwargs); its own limit, if hit,
            # is still flagged TRUNCATED below.
            if not hasattr(env, "_step_limit"):
                raise RuntimeError("dm_control changed: control.Environment has no _step_limit")
            env._step_limit = float("inf")
        ncam = self._envs[0].physics.model.ncam
        if not 0 <= camera < ncam:
            self.close()
            raise ConfigError(f"camera {camera} does not exist for {spec.name}: the model has "
                              f"{ncam} cameras (ids 0..{ncam - 1})")
        if render_quality == "fast":
            for env in self._envs:  # read when the GL context is made, i.e. before any render
                env.physics.model.vis.quality.shadowsize = 512
                env.physics.model.vis.quality.offsamples = 0
        aspec = self._envs[0].action_spec()
        self.action_dim = int(aspec.shape[0])
        self._act_low = aspec.minimum.astype(np.float64)
        self._act_high = aspec.maximum.astype(np.float64)
        self.state_dim = int(sum(int(np.prod(s.shape)) for s in
                                 self._envs[0].observation_spec().values()))
        self._keypoints = [DmcKeypoints(env.physics, spec.domain, camera, image_size)
                           for env in self._envs] if keypoints else None
        if self._keypoints:
            self.state_dim = self._keypoints[0].dim
        self._cameras: list[Camera | None] = [None] * num_envs
        self._t = np.zeros(num_envs, np.int64)  # control steps into the episode
        self._prev_pose: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = [
            (np.zeros((3, 4)), np.zeros(3), np.zeros(3))] * num_envs
        super().__init__()

    # --- rendering --------------------------------------------------------------------------
    def _camera(self, i: int) -> Camera:
        cam = self._cameras[i]
        if cam is None:
            size = self.obs_shape[1]
            cam = Camera(self._envs[i].physics, height=size, width=size, camera_id=self.camera)
            self._cameras[i] = cam
        return cam

    def _render_into(self, i: int, out: StepBatch) -> None:
        rgb = self._camera(i).render()  # [H, W, 3] uint8, already flipped upright
        out.frames[i] = rgb.transpose(2, 0, 1)

    def _camera_pose(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(3x4 camera matrix, camera position, viewing direction) at the current state."""
        data = self._envs[i].physics.data
        forward = -data.cam_xmat[self.camera].reshape(3, 3)[:, 2]  # MuJoCo cameras look along -z
        return self._camera(i).matrix, data.cam_xpos[self.camera].copy(), forward

    def _camera_motion(self, i: int) -> np.ndarray:
        """(dx, dy) pixels that static content in the robot's plane moved since the last frame."""
        prev_matrix, prev_pos, prev_forward = self._prev_pose[i]
        self._prev_pose[i] = now = self._camera_pose(i)
        if not self.camera_moves:
            return np.zeros(2, np.float32)
        if self.camera_measure == "origin":  # the authors' measure
            return (_project(now[0], _WORLD_ORIGIN)
                    - _project(prev_matrix, _WORLD_ORIGIN)).astype(np.float32)
        # Static world point: where the previous optical axis meets the plane y = 0, in which
        # the planar robots (cheetah, walker, hopper) move, i.e. at the depth of the body.
        depth = -prev_pos[1] / prev_forward[1] if abs(prev_forward[1]) > 1e-6 else 1.0
        point = np.append(prev_pos + depth * prev_forward, 1.0)
        return (_project(now[0], point) - _project(prev_matrix, point)).astype(np.float32)

    # --- VecEnv hooks -----------------------------------------------------------------------
    def _reset_envs(self, ids: np.ndarray, out: StepBatch) -> None:
        for i in ids:
            ts = self._envs[i].reset()
            self._t[i] = 0
            if self.renders:
                self._render_into(i, out)
                self._prev_pose[i] = self._camera_pose(i)
            out.state[i] = self._state(i, ts, first=True)

    def _state(self, i: int, ts, first: bool = False) -> np.ndarray:
        if self._keypoints is None:
            return flat_state(ts.observation)
        keypoints, physics = self._keypoints[i], self._envs[i].physics
        return keypoints.reset(physics) if first else keypoints.step(physics)

    def _step_envs(self, ids: np.ndarray, actions: np.ndarray, out: StepBatch) -> None:
        # Map [-1, 1] to the task's bounds (all suite tasks already use [-1, 1]).
        scaled = self._act_low + (actions + 1.0) * 0.5 * (self._act_high - self._act_low)
        for k, i in enumerate(ids):
            env, total, flag, ts = self._envs[i], 0.0, 0, None
            for _ in range(self.action_repeat):
                ts = env.step(scaled[k])
                total += ts.reward or 0.0
                self._t[i] += 1
                if ts.last() and ts.discount == 0.0:
                    flag = TERMINAL
                    break
                if ts.last() or self._t[i] >= self.episode_control_steps:
                    flag = TRUNCATED
                    break
            out.reward[i] = total
            out.flags[i] = flag
            out.state[i] = self._state(i, ts)
            if self.renders:
                self._render_into(i, out)
                out.cam[i] = self._camera_motion(i)

    def close(self) -> None:
        for cam in getattr(self, "_cameras", []):
            if cam is not None:
                cam._scene.free()  # release mjvScene memory now rather than at GC
        self._cameras = [None] * len(getattr(self, "_cameras", []))
        for env in self._envs:
            env.close()
        self._envs = []


def _project(matrix: np.ndarray, point: np.ndarray) -> np.ndarray:
    u, v, w = matrix @ point
    return np.array([u / w, v / w])
