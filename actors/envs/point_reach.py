"""`point_reach`: a tiny NumPy-rendered task for tests and CPU-only trials.

A bright dot starts at a random place in the arena [-1, 1]^2 each episode; the 2-D action moves
it by up to MAX_MOVE per step (0.1 of the arena's width of 2), clipped to the arena. The target
is the arena centre, marked faintly in every image. Reward = -distance to the target (dense);
episodes end only by the time limit (TRUNCATED). Images are H x W CHW RGB (32 x 32 by default).
State for the state baseline = (dot x, dot y, target x, target y); with keypoints=True the
handcrafted keypoints of the dot's and the target's centres instead (fpac_async/agent/keypoints.py,
through the image's own pixel mapping `pixel_matrix`). Env i uses seed + i.
"""
from __future__ import annotations

import numpy as np

from actors.envs.base import TRUNCATED, StepBatch, VecEnv
from fpac_async.agent.keypoints import keypoint_state

MAX_MOVE = 0.2  # arena units per agent step: 0.1 of the arena width (2)
DOT_HALF_WIDTH = 1.5  # pixels: the dot covers a 3x3 square
BACKGROUND = np.array([16, 16, 24], np.uint8)
TARGET_COLOUR = np.array([60, 60, 90], np.uint8)
DOT_COLOUR = np.array([255, 210, 40], np.uint8)


class PointReachVecEnv(VecEnv):
    """N point_reach envs vectorised in NumPy."""

    action_dim = 2
    state_dim = 4
    action_repeat = 1
    provides_cam = True  # the camera is fixed: a zero offset is exact

    def __init__(self, num_envs: int, seed: int, image_size: int = 32,
                 episode_steps: int = 50, render: bool = True, keypoints: bool = False) -> None:
        if num_envs < 1 or image_size < 8 or episode_steps < 1:
            raise ValueError("point_reach needs num_envs >= 1, image_size >= 8, episode_steps >= 1")
        self.num_envs = num_envs
        self.obs_shape = (3, image_size, image_size)
        self.renders = bool(render)
        self.episode_steps = episode_steps
        self._rngs = [np.random.default_rng(seed + i) for i in range(num_envs)]
        self._pos = np.zeros((num_envs, 2), np.float64)
        self._target = np.zeros((num_envs, 2), np.float64)
        self._t = np.zeros(num_envs, np.int64)
        # Pixel-centre coordinates in arena units; pixel (row 0, col 0) is (x=-1, y=+1).
        axis = np.linspace(-1.0, 1.0, image_size)
        self._px_per_unit = (image_size - 1) / 2.0
        self._background = self._draw_background(axis)
        self.keypoints = bool(keypoints)
        if self.keypoints:
            self.state_dim = 8  # 2 keypoints (dot, target) x (position, velocity) x (x, y)
            self._prev_pos = np.zeros((num_envs, 2), np.float64)
        super().__init__()

    def pixel_matrix(self) -> np.ndarray:
        """3x4 'camera' matrix taking arena points (x, y, 0, 1) to (column, row, 1) of the image
        that _render draws (the dot's centre pixel), for the keypoints."""
        s = self._px_per_unit
        return np.array([[s, 0.0, 0.0, s], [0.0, -s, 0.0, s], [0.0, 0.0, 0.0, 1.0]])

    def _draw_background(self, axis: np.ndarray) -> np.ndarray:
        img = np.empty((3, len(axis), len(axis)), np.uint8)
        img[:] = BACKGROUND[:, None, None]
        c = (len(axis) - 1) / 2.0
        lo, hi = int(np.floor(c)), int(np.ceil(c))
        # A faint plus sign at the centre target (fixed in every frame).
        img[:, lo:hi + 1, max(lo - 2, 0):hi + 3] = TARGET_COLOUR[:, None, None]
        img[:, max(lo - 2, 0):hi + 3, lo:hi + 1] = TARGET_COLOUR[:, None, None]
        return img

    def _render(self, ids: np.ndarray) -> np.ndarray:
        size = self.obs_shape[1]
        col = (self._pos[ids, 0] + 1.0) * self._px_per_unit  # x grows to the right
        row = (1.0 - self._pos[ids, 1]) * self._px_per_unit  # y grows upwards
        grid = np.arange(size, dtype=np.float64)
        in_row = np.abs(grid[None, :] - row[:, None]) <= DOT_HALF_WIDTH  # [n, H]
        in_col = np.abs(grid[None, :] - col[:, None]) <= DOT_HALF_WIDTH  # [n, W]
        mask = in_row[:, :, None] & in_col[:, None, :]  # [n, H, W]
        frames = np.repeat(self._background[None], len(ids), axis=0)
        frames[:, :, :, :] = np.where(mask[:, None], DOT_COLOUR[None, :, None, None], frames)
        return frames

    def _state(self, ids: np.ndarray) -> np.ndarray:
        if self.keypoints:
            return self._keypoint_state(ids)
        return np.concatenate([self._pos[ids], self._target[ids]], axis=1).astype(np.float32)

    def _keypoint_state(self, ids: np.ndarray) -> np.ndarray:
        size, matrix, rows = self.obs_shape[1], self.pixel_matrix(), []
        for i in ids:
            now = np.array([[*self._pos[i], 0.0], [*self._target[i], 0.0]])
            prev = np.array([[*self._prev_pos[i], 0.0], [*self._target[i], 0.0]])
            rows.append(keypoint_state(now, prev, matrix, size, size))
            self._prev_pos[i] = self._pos[i]
        return np.stack(rows)

    def _reset_envs(self, ids: np.ndarray, out: StepBatch) -> None:
        for i in ids:
            self._pos[i] = self._rngs[i].uniform(-0.9, 0.9, size=2)
            if self.keypoints:
                self._prev_pos[i] = self._pos[i]  # zero velocity at an episode's start
        self._t[ids] = 0
        if self.renders:
            out.frames[ids] = self._render(ids)
        out.state[ids] = self._state(ids)

    def _step_envs(self, ids: np.ndarray, actions: np.ndarray, out: StepBatch) -> None:
        self._pos[ids] = np.clip(self._pos[ids] + MAX_MOVE * actions, -1.0, 1.0)
        self._t[ids] += 1
        dist = np.linalg.norm(self._pos[ids] - self._target[ids], axis=1)
        out.reward[ids] = (-dist).astype(np.float32)
        out.flags[ids] = np.where(self._t[ids] >= self.episode_steps, TRUNCATED, 0)
        if self.renders:
            out.frames[ids] = self._render(ids)
        out.state[ids] = self._state(ids)
