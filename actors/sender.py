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
    """Preallocated arrays for up to T records of each of N envs, env-major ([N, T, ...]) so that
    one record of every env is one strided write per field and each env's chunk is a contiguous
    slice at send time. All envs advance one record per add(), so their chunks fill in lockstep."""

    def __init__(self, num_envs: int, capacity: int, obs_shape: tuple[int, int, int],
                 action_dim: int, state_dim: int) -> None:
        n = num_envs
        self.obs = np.empty((n, capacity, *obs_shape), np.uint8)
        self.action = np.empty((n, capacity, action_dim), np.float32)
        self.reward = np.empty((n, capacity), np.float32)
        self.flags = np.empty((n, capacity), np.uint8)
        self.version = np.empty((n, capacity), np.int32)
        self.cam = np.zeros((n, capacity, 2), np.float32)
        self.state = np.empty((n, capacity, state_dim), np.float32) if state_dim else None
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
        self._chunk = self._new_chunk()
        self.send_seconds = 0.0  # time blocked in send (backpressure shows up here)
        self.records_sent = 0
        self.messages_sent = 0
        self.lag_sum = 0  # sum over sent records of (current version - record version)

    def _new_chunk(self) -> _Chunk:
        return _Chunk(self.num_envs, self.steps_per_message, self.obs_shape, self.action_dim,
                      self.state_dim)

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
        c = self._chunk
        i = c.size
        # One write per field for all envs (the hot path: ~10 us per record, measured in
        # bench/bench_transport.py).
        c.obs[:, i] = frames
        c.action[:, i] = actions
        c.reward[:, i] = reward
        c.flags[:, i] = flags
        c.version[:, i] = version
        if cam is not None:
            c.cam[:, i] = cam
        if c.state is not None:
            c.state[:, i] = state
        c.size = i + 1
        if c.size == self.steps_per_message:
            self.flush(current_version)

    def flush(self, current_version: int | None = None) -> None:
        """Send every env's buffered records (also at shutdown: the learner keeps what it got)."""
        c = self._chunk
        t = c.size
        if t == 0:
            return
        self._chunk = self._new_chunk()  # the sent arrays belong to ZeroMQ until delivered
        for e in range(self.num_envs):
            msg = steps_message(self.actor_id, e, self.seq[e], self.step0[e], c.obs[e, :t],
                                c.action[e, :t], c.reward[e, :t], c.flags[e, :t],
                                c.version[e, :t], c.cam[e, :t],
                                None if c.state is None else c.state[e, :t])
            start = time.perf_counter()
            self._send(msg)
            self.send_seconds += time.perf_counter() - start
            self.seq[e] += 1
            self.step0[e] += t
        if current_version is not None:
            self.lag_sum += int(np.sum(current_version - c.version[:, :t].astype(np.int64)))
        self.records_sent += t * self.num_envs
        self.messages_sent += self.num_envs
