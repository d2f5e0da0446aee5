"""The VecEnv interface (docs/INTERFACES.md, "Environment stream") and its shared bookkeeping.

Every backend subclasses `VecEnv` and implements two hooks, `_reset_envs` and `_step_envs`. This
class owns the parts that must be identical across backends: action validation, the StepBatch
layout, and the DEFERRED auto-reset: a step that ends an episode returns the final frame with
TERMINAL or TRUNCATED; the next `step()` resets that env, ignores its action and returns the
reset frame with FIRST and reward 0.

Rendering is optional: a VecEnv built with `render=False` (`renders` is False) never renders and
its StepBatches carry `frames=None`; it must provide `state` (the only observation left). That is
the path of encoders that need no pixels (the `state` encoder): they run at physics speed.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from fpac_async.wire.protocol import FIRST, TERMINAL, TRUNCATED  # the wire format owns the flag values

ENDED = TERMINAL | TRUNCATED


@dataclass
class StepBatch:
    """One agent step of N envs. `state` is None when the backend has no low-dim state;
    `frames` is None when the env does not render (then `state` is always given)."""

    frames: np.ndarray | None  # uint8 [N, 3, H, W], CHW RGB
    reward: np.ndarray  # float32 [N], summed over the action repeat
    flags: np.ndarray  # uint8 [N], FIRST / TERMINAL / TRUNCATED bits
    state: np.ndarray | None  # float32 [N, D]
    cam: np.ndarray  # float32 [N, 2], pixel motion of static content since the previous frame

    def check(self, num_envs: int, obs_shape: tuple[int, int, int], state_dim: int,
              renders: bool = True) -> None:
        """Raise ValueError when a field has the wrong shape or dtype (a backend bug)."""
        if renders:
            _expect("frames", self.frames, np.uint8, (num_envs, *obs_shape))
        elif self.frames is not None:
            raise ValueError("StepBatch.frames: expected None (this env does not render)")
        elif self.state is None:
            raise ValueError("StepBatch.state: an env that does not render must provide state")
        _expect("reward", self.reward, np.float32, (num_envs,))
        _expect("flags", self.flags, np.uint8, (num_envs,))
        _expect("cam", self.cam, np.float32, (num_envs, 2))
        if self.state is not None:
            _expect("state", self.state, np.float32, (num_envs, state_dim))


def _expect(name: str, a: np.ndarray, dtype: type, shape: tuple[int, ...]) -> None:
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != shape:
        got = (getattr(a, "dtype", type(a)), getattr(a, "shape", None))
        raise ValueError(f"StepBatch.{name}: expected {np.dtype(dtype)} {shape}, got {got}")


class VecEnv(ABC):
    """N environments stepped together; see the module docstring for the reset rule."""

    num_envs: int
    obs_shape: tuple[int, int, int]
    action_dim: int
    state_dim: int  # 0 when the backend provides no state
    action_repeat: int
    provides_cam: bool = False  # True when `cam` is a real camera-motion measurement
    renders: bool = True  # False: no frames at all (StepBatch.frames is None); obs_shape is then
    # only the image size the env WOULD render (hello messages still state it)

    def __init__(self) -> None:
        if not self.renders and not self.state_dim:
            raise ValueError(f"{type(self).__name__}: an env that does not render must provide "
                             "state (state_dim > 0)")
        self._needs_reset = np.ones(self.num_envs, dtype=bool)
        self._started = False

    # --- hooks the backends implement -------------------------------------------------------
    @abstractmethod
    def _reset_envs(self, ids: np.ndarray, out: StepBatch) -> None:
        """Reset envs `ids` and write their first frame (unless not rendering) and state into
        out[ids]."""

    @abstractmethod
    def _step_envs(self, ids: np.ndarray, actions: np.ndarray, out: StepBatch) -> None:
        """Advance envs `ids` by one agent step (action_repeat control steps) and write
        frames (unless not rendering), summed reward, TERMINAL/TRUNCATED flags, state and cam
        into out[ids]."""

    def close(self) -> None:
        """Release renderer contexts and worker threads."""

    # --- the public interface ---------------------------------------------------------------
    def reset(self) -> StepBatch:
        """Reset every env; all flags are FIRST."""
        out = self._empty_batch()
        ids = np.arange(self.num_envs)
        self._reset_envs(ids, out)
        out.flags[:] = FIRST
        self._needs_reset[:] = False
        self._started = True
        out.check(self.num_envs, self.obs_shape, self.state_dim, self.renders)
        return out

    def step(self, actions: np.ndarray) -> StepBatch:
        """One agent step; envs that ended last step are reset instead (their action ignored)."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = self._check_actions(actions)
        out = self._empty_batch()
        reset_ids = np.flatnonzero(self._needs_reset)
        step_ids = np.flatnonzero(~self._needs_reset)
        if reset_ids.size:
            self._reset_envs(reset_ids, out)
            out.flags[reset_ids] = FIRST
            out.reward[reset_ids] = 0.0
            out.cam[reset_ids] = 0.0
        if step_ids.size:
            self._step_envs(step_ids, actions[step_ids], out)
        self._needs_reset = (out.flags & ENDED) != 0
        out.check(self.num_envs, self.obs_shape, self.state_dim, self.renders)
        return out

    def __enter__(self) -> VecEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _empty_batch(self) -> StepBatch:
        n = self.num_envs
        return StepBatch(
            frames=np.zeros((n, *self.obs_shape), np.uint8) if self.renders else None,
            reward=np.zeros(n, np.float32),
            flags=np.zeros(n, np.uint8),
            state=np.zeros((n, self.state_dim), np.float32) if self.state_dim else None,
            cam=np.zeros((n, 2), np.float32),
        )

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        a = np.asarray(actions, dtype=np.float32)
        if a.shape != (self.num_envs, self.action_dim):
            raise ValueError(f"actions: expected shape {(self.num_envs, self.action_dim)}, "
                             f"got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError("actions contain NaN or inf")
        # Policies emit tanh-squashed actions; clip only rounding excursions outside [-1, 1].
        return np.clip(a, -1.0, 1.0)
