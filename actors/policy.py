"""The actor's policy: the learner's TorchScript module, a per-env observation cache, random phase.

The learner sends a `policy` message (TorchScript bytes + flat weights) and later `weights`
refreshes (docs/INTERFACES.md). While the learner says `random` (its initial random phase) or no
policy has arrived, actions are uniform in [-1, 1]^A.

Observation caches, so that each step encodes ONE new frame per env:
- fpac encoder: the previous frame's feature points x_{t-1} are kept per env and the module's
  `act_from_points(x_t, x_prev)` builds the state [x_t, x_t - x_{t-1}] (paper section III). At a
  FIRST record x_prev := x_t, matching the replay, which repeats the first frame of an episode.
  The cache is dropped whenever the weights change (points from old weights would mix encoders).
- other encoders: a per-env frame stack uint8 [N, 3S, H, W] (oldest first) fed to `forward`.
- no frames (an env that does not render, for encoders that need no pixels such as `state`):
  `act(None, flags, cam, state)` feeds `forward` an empty uint8 [N, 0, 0, 0] observation and the
  state; nothing is cached.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch

from fpac_async.agent.export import load_flat_weights, script_from_bytes
from fpac_async.wire.protocol import FIRST


class ActorPolicy:
    """Acts for the N envs of one actor process; see the module docstring."""

    def __init__(self, num_envs: int, action_dim: int, seed: int, frame_stack: int = 2,
                 seed_global: bool = True) -> None:
        if num_envs < 1 or action_dim < 1 or frame_stack < 1:
            raise ValueError("ActorPolicy needs num_envs, action_dim and frame_stack >= 1")
        if seed_global:
            # The TorchScript actor draws its exploration noise from torch's global generator.
            torch.manual_seed(seed)
        self.num_envs = num_envs
        self.action_dim = action_dim
        self.frame_stack = frame_stack
        self._random_gen = torch.Generator().manual_seed(seed)
        self.module: torch.jit.ScriptModule | None = None
        self.version = 0
        self.random = True
        self._script_digest = b""
        self._has_points = False
        self._prev_points: torch.Tensor | None = None  # [N, K, P] of the previous frames
        self._prev_frames: np.ndarray | None = None  # uint8 [N, 3, H, W]
        self._stack: np.ndarray | None = None  # uint8 [N, 3S, H, W], oldest frame first

    # ------------------------------------------------------------------ updates from the learner
    def load_policy(self, script: bytes | np.ndarray, flat: np.ndarray,
                    layout: Sequence, version: int, random: bool) -> None:
        """A `policy` message: (re)load the TorchScript module unless it is the one held. A new
        module is adopted only once the weights loaded into it: bytes that are not TorchScript
        (RuntimeError) or weights that do not fit it (ValueError) leave the held policy as it was."""
        raw = bytes(memoryview(script))
        digest = hashlib.sha1(raw).digest()
        if self.module is None or digest != self._script_digest:
            module = script_from_bytes(raw)
            module.eval()
            load_flat_weights(module, np.array(flat, dtype=np.float32), layout)
            self.module = module
            self._script_digest = digest
            self._has_points = bool(getattr(module, "has_points", False))
            self.weights_changed(version, random)
            return
        self.apply_weights(version, flat, layout, random)

    def apply_weights(self, version: int, flat: np.ndarray, layout: Sequence,
                      random: bool | None = None) -> None:
        """Copy flat weights into the held module (ValueError on a layout mismatch)."""
        if self.module is None:
            raise RuntimeError("weights arrived before any policy module")
        # A copy: decoded arrays are read-only views of the received message.
        load_flat_weights(self.module, np.array(flat, dtype=np.float32), layout)
        self.weights_changed(version, random)

    def weights_changed(self, version: int, random: bool | None = None) -> None:
        """The (shared) module now holds `version`: adopt it and drop caches from older weights.
        Forks that share the module call this instead of loading the same weights again."""
        self.version = int(version)
        if random is not None:
            self.random = bool(random)
        self._prev_points = None  # cached points came from the old encoder weights

    def fork(self, num_envs: int, seed: int) -> ActorPolicy:
        """A policy for other envs (evaluation) sharing this one's module and weights, with its
        own caches; it does not reseed torch's global generator (training noise continues)."""
        other = ActorPolicy(num_envs, self.action_dim, seed, self.frame_stack, seed_global=False)
        other.module = self.module
        other._script_digest = self._script_digest
        other._has_points = self._has_points
        other.version = self.version
        other.random = self.random
        return other

    @property
    def ready(self) -> bool:
        return self.module is not None

    # ------------------------------------------------------------------ acting
    def act(self, frames: np.ndarray | None, flags: np.ndarray, cam: np.ndarray | None = None,
            state: np.ndarray | None = None, deterministic: bool = False) -> np.ndarray:
        """Actions f32 [N, A] in [-1, 1] for the newest frames uint8 [N, 3, H, W], or for the
        state f32 [N, D] alone when frames is None (an env that does not render)."""
        n = self.num_envs
        if frames is None:
            if state is None or np.shape(state)[:1] != (n,):
                raise ValueError(f"without frames the policy acts on state f32 [{n}, D]; got "
                                 f"{None if state is None else np.shape(state)}")
        elif frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[:2] != (n, 3):
            raise ValueError(f"frames must be uint8 [{n}, 3, H, W]; got {frames.dtype} {frames.shape}")
        if flags.shape != (n,):
            raise ValueError(f"flags must be [{n}]; got {flags.shape}")
        first = (np.asarray(flags) & FIRST) != 0
        if self.module is None or self.random:
            if frames is not None:
                self._remember(frames, first, points=None)
            u = torch.rand((n, self.action_dim), generator=self._random_gen)
            return (u * 2.0 - 1.0).numpy()
        with torch.inference_mode():
            cam_t = None if cam is None else torch.from_numpy(np.ascontiguousarray(cam, np.float32))
            if frames is None:
                if self._has_points:
                    raise ValueError("this policy's encoder needs pixels (feature points), but "
                                     "the env does not render")
                state_t = torch.from_numpy(np.ascontiguousarray(state, np.float32))
                action = self.module.forward(torch.empty((n, 0, 0, 0), dtype=torch.uint8),
                                             deterministic, cam_t, state_t)
            elif self._has_points:
                x_t = self.module.points(torch.from_numpy(frames))
                x_prev = self._previous_points(x_t, first)
                action = self.module.act_from_points(x_t, x_prev, deterministic, cam_t)
                self._remember(frames, first, points=x_t)
            else:
                self._remember(frames, first, points=None)
                state_t = None if state is None else torch.from_numpy(
                    np.ascontiguousarray(state, np.float32))
                action = self.module.forward(torch.from_numpy(self._stack), deterministic,
                                             cam_t, state_t)
        out = action.numpy().astype(np.float32, copy=False)
        if out.shape != (n, self.action_dim):
            raise ValueError(f"policy returned actions {out.shape}; expected {(n, self.action_dim)}")
        return out

    def _previous_points(self, x_t: torch.Tensor, first: np.ndarray) -> torch.Tensor:
        """x_{t-1} per env: the cache, or (after a weights change) the kept frame re-encoded."""
        prev = self._prev_points
        if prev is None or prev.shape != x_t.shape:
            if self._prev_frames is None:
                return x_t.clone()
            prev = self.module.points(torch.from_numpy(self._prev_frames))
        if first.any():
            prev = prev.clone()
            mask = torch.from_numpy(first)
            prev[mask] = x_t[mask]
        return prev

    def _remember(self, frames: np.ndarray, first: np.ndarray, points: torch.Tensor | None) -> None:
        """Advance the caches by one frame (FIRST rows restart from the current frame)."""
        self._prev_frames = frames.copy()
        self._prev_points = points
        if self.module is not None and self._has_points:
            self._stack = None  # the fpac path needs no stack
            return
        if self._stack is None or self._stack.shape[2:] != frames.shape[2:]:
            self._stack = np.repeat(frames, self.frame_stack, axis=1)
            return
        self._stack[:, :-3] = self._stack[:, 3:].copy()  # drop the oldest frame
        self._stack[:, -3:] = frames
        if first.any():
            self._stack[first] = np.repeat(frames[first], self.frame_stack, axis=1)
