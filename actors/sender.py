"""Per-env record streams, chunked into `steps` messages (docs/INTERFACES.md, "Environment stream").

Record j of an (actor, env) stream is (frame o_j, the action that led to o_j, reward r_j, flags_j,
the policy version that chose the action, cam_j, state_j). Each frame is sent once; the learner
rebuilds stacks at sample time. A chunk of `steps_per_message` records goes out as one `steps`
message with seq = chunk count and meta.step0 = index of its first record in the stream.

Sends block: the PUSH socket has a small SNDHWM, so a learner that stops reading (its replay
ratio says so, or it is slow) stalls the actor instead of growing memory anywhere. Chunk arrays
are fresh for every message because zero-copy sends read them later from ZeroMQ's IO thread.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from fpac_async.protocol import Message, steps_message

SendFn = Callable[[Message], None]


class _Chunk:
    """Preallocated arrays for up to T records of one env."""

    def __init__(self, capacity: int, obs_shape: tuple[int, int, int], action_dim: int,
                 state_dim: int) -> None:
        self.obs = np.empty((capacity, *obs_shape), np.uint8)
        self.action = np.empty((capacity, action_dim), np.float32)
        self.reward = np.empty(capacity, np.float32)
        self.flags = np.empty(capacity, np.uint8)
        self.version = np.empty(capacity, np.int32)
        self.cam = np.empty((capacity, 2), np.float32)
        self.state = np.empty((capacity, state_dim), np.float32) if state_dim else None
        self.size = 0


class StreamSender:
    """Buffers the records of N env streams and sends them as `steps` chunks through `send`."""

    def __init__(self, send: SendFn, actor_id: int, num_envs: int, obs_shape: tuple[int, int, int],
                 action_dim: int, state_dim: int = 0, steps_per_message: int = 16) -> None:
        if steps_per_message < 1:
            raise ValueError(f"steps_per_message must be >= 1; got {steps_per_message}")
        self._send = send
        self.actor_id = actor_id
        self.num_envs = num_envs
        self.obs_shape = tuple(obs_shape)
        self.action_dim = action_dim
        self.state_dim = state_dim
        self.steps_per_message = steps_per_message
        self.seq = [0] * num_envs  # chunks sent per stream
        self.step0 = [0] * num_envs  # stream index of the buffered chunk's first record
        self._chunks = [self._new_chunk() for _ in range(num_envs)]
        self.send_seconds = 0.0  # time blocked in send (backpressure shows up here)
        self.records_sent = 0
        self.messages_sent = 0
        self.lag_sum = 0  # sum over sent records of (current version - record version)

    def _new_chunk(self) -> _Chunk:
        return _Chunk(self.steps_per_message, self.obs_shape, self.action_dim, self.state_dim)

    def add(self, frames: np.ndarray, actions: np.ndarray, reward: np.ndarray, flags: np.ndarray,
            version: int | np.ndarray, cam: np.ndarray | None = None,
            state: np.ndarray | None = None, current_version: int | None = None) -> None:
        """Append one record to every env's stream; full chunks are sent (blocking)."""
        n = self.num_envs
        if frames.shape != (n, *self.obs_shape) or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 {(n, *self.obs_shape)}; got {frames.dtype} "
                             f"{frames.shape}")
        if actions.shape != (n, self.action_dim):
            raise ValueError(f"actions must be {(n, self.action_dim)}; got {actions.shape}")
        if reward.shape != (n,) or flags.shape != (n,):
            raise ValueError(f"reward and flags must be [{n}]; got {reward.shape}, {flags.shape}")
        if self.state_dim and (state is None or state.shape != (n, self.state_dim)):
            raise ValueError(f"state must be [{n}, {self.state_dim}]")
        versions = [int(version)] * n if np.ndim(version) == 0 else np.asarray(version, np.int32)
        for e in range(n):
            c = self._chunks[e]
            i = c.size
            c.obs[i] = frames[e]
            c.action[i] = actions[e]
            c.reward[i] = reward[e]
            c.flags[i] = flags[e]
            c.version[i] = versions[e]
            c.cam[i] = 0.0 if cam is None else cam[e]
            if c.state is not None:
                c.state[i] = state[e]
            c.size = i + 1
            if c.size == self.steps_per_message:
                self._flush_env(e, current_version)

    def flush(self, current_version: int | None = None) -> None:
        """Send every partly filled chunk (at shutdown: the learner keeps what it got)."""
        for e in range(self.num_envs):
            if self._chunks[e].size:
                self._flush_env(e, current_version)

    def _flush_env(self, e: int, current_version: int | None) -> None:
        c = self._chunks[e]
        t = c.size
        msg = steps_message(self.actor_id, e, self.seq[e], self.step0[e], c.obs[:t], c.action[:t],
                            c.reward[:t], c.flags[:t], c.version[:t], c.cam[:t],
                            None if c.state is None else c.state[:t])
        start = time.perf_counter()
        self._send(msg)
        self.send_seconds += time.perf_counter() - start
        if current_version is not None:
            self.lag_sum += int(np.sum(current_version - c.version[:t].astype(np.int64)))
        self.seq[e] += 1
        self.step0[e] += t
        self.records_sent += t
        self.messages_sent += 1
        self._chunks[e] = self._new_chunk()  # the sent arrays belong to ZeroMQ until delivered
