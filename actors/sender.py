"""Per-env record streams, chunked into `steps` messages (docs/INTERFACES.md, "Environment stream").

Record j of an (actor, env) stream is (frame o_j, the action that led to o_j, reward r_j, flags_j,
the policy version that chose the action, cam_j, state_j). Each frame is sent once; the learner
rebuilds stacks at sample time. A chunk of `steps_per_message` records goes out as one `steps`
message with seq = chunk count and meta.step0 = index of its first record in the stream.

Sends block: the PUSH socket has a small SNDHWM, so a learner that stops reading (its replay
ratio says so, or it is slow) stalls the actor instead of growing memory anywhere.

Chunk buffers are pooled. A zero-copy send keeps a reference to the chunk's arrays until libzmq
has written them out, so a chunk is reused only once nothing but the pool refers to any of its
arrays (reference counts back to their idle value); otherwise a new one is allocated. A fresh
~340 KB chunk per message meant ~80 page faults per message; reusing warm memory (and writing
records through views made once per chunk) cut the sender's CPU per message (bench/bench_transport.py).

A sender made with frames=False (an actor that does not render: encoders that need no pixels)
holds and sends no frames; its records carry the state instead (steps messages without `obs`).
"""
from __future__ import annotations

import sys
import time
from typing import Callable

import numpy as np

from fpac_async.wire.protocol import Message, steps_message

SendFn = Callable[[Message], None]


class _Chunk:
    """Preallocated arrays for up to T records of each of N envs, env-major ([N, T, ...]) so that
    one record of every env is one strided write per field and each env's chunk is a contiguous
    slice at send time. All envs advance one record per add(), so their chunks fill in lockstep."""

    def __init__(self, num_envs: int, capacity: int, obs_shape: tuple[int, int, int] | None,
                 action_dim: int, state_dim: int) -> None:
        n = num_envs
        self.obs = None if obs_shape is None else np.empty((n, capacity, *obs_shape), np.uint8)
        self.action = np.empty((n, capacity, action_dim), np.float32)
        self.reward = np.empty((n, capacity), np.float32)
        self.flags = np.empty((n, capacity), np.uint8)
        self.version = np.empty((n, capacity), np.int32)
        self.cam = np.empty((n, capacity, 2), np.float32)
        self.state = np.empty((n, capacity, state_dim), np.float32) if state_dim else None
        self.nbytes = sum(a.nbytes for a in self._arrays())
        # Record i's [N, ...] view of every field, made once: `view[...] = x` costs about half of
        # `array[:, i] = x`, and a pooled chunk is filled many times.
        self.rows = [(None if self.obs is None else self.obs[:, i], self.action[:, i],
                      self.reward[:, i], self.flags[:, i], self.version[:, i], self.cam[:, i],
                      None if self.state is None else self.state[:, i]) for i in range(capacity)]
        self.size = 0
        self._idle_refs = self._refcounts()  # only the chunk's own views refer to the arrays

    def _arrays(self) -> tuple[np.ndarray, ...]:
        arrays = (self.obs, self.action, self.reward, self.flags, self.version, self.cam,
                  self.state)
        return tuple(a for a in arrays if a is not None)

    def _refcounts(self) -> list[int]:
        # Every view of an array (a message's slices, the memoryviews ZeroMQ holds for a
        # zero-copy frame until libzmq frees it) keeps a reference to the array itself (numpy
        # collapses view bases), so an in-flight frame always shows up here. Counted the same way
        # as at construction, so the temporaries are the same.
        return [sys.getrefcount(a) for a in self._arrays()]

    def is_free(self) -> bool:
        """True when nothing outside the chunk refers to its arrays (safe to overwrite)."""
        return self._refcounts() == self._idle_refs


class StreamSender:
    """Buffers the records of N env streams and sends them as `steps` chunks through `send`."""

    # Sent chunks kept for reuse. In flight at once: the SNDHWM queue, what the IO thread is
    # writing and what pyzmq's garbage-collector thread has not yet released (it needs the GIL):
    # a few messages. Beyond the pool a chunk is allocated fresh, so nothing ever waits on it.
    POOL_CHUNKS = 8
    POOL_BYTES = 64 * 2**20  # fewer pooled chunks when chunks are big (many envs, large images)

    def __init__(self, send: SendFn, actor_id: int, num_envs: int, obs_shape: tuple[int, int, int],
                 action_dim: int, state_dim: int = 0, steps_per_message: int = 16,
                 frames: bool = True) -> None:
        if steps_per_message < 1:
            raise ValueError(f"steps_per_message must be >= 1; got {steps_per_message}")
        if not frames and state_dim < 1:
            raise ValueError("a sender without frames needs state (state_dim >= 1)")
        self._send = send
        self.actor_id = actor_id
        self.num_envs = num_envs
        self.obs_shape = tuple(obs_shape)
        self.frames = bool(frames)
        self.action_dim = action_dim
        self.state_dim = state_dim
        self.steps_per_message = steps_per_message
        self._frames_shape = (num_envs, *self.obs_shape)
        self._actions_shape = (num_envs, action_dim)
        self._state_shape = (num_envs, state_dim)
        self._env_shape = (num_envs,)
        self.seq = [0] * num_envs  # chunks sent per stream
        self.step0 = [0] * num_envs  # stream index of the buffered chunk's first record
        self._pool: list[_Chunk] = []  # chunks sent before, reused once ZeroMQ released them
        self.chunks_allocated = 0
        self._chunk = self._take_chunk()
        self.send_seconds = 0.0  # time blocked in send (backpressure shows up here)
        self.records_sent = 0
        self.messages_sent = 0
        self.lag_sum = 0  # sum over sent records of (current version - record version)

    @property
    def next_index(self) -> int:
        """The stream index of the next record added (every env's stream advances in lockstep)."""
        return self.step0[0] + self._chunk.size

    def _take_chunk(self) -> _Chunk:
        """The first free pooled chunk (the most recently used memory is the warmest), else a
        new one, pooled while the pool has room."""
        for chunk in self._pool:
            if chunk.is_free():
                chunk.size = 0
                return chunk
        chunk = _Chunk(self.num_envs, self.steps_per_message,
                       self.obs_shape if self.frames else None, self.action_dim, self.state_dim)
        self.chunks_allocated += 1
        room = max(2, min(self.POOL_CHUNKS, self.POOL_BYTES // chunk.nbytes))
        if len(self._pool) < room:
            self._pool.append(chunk)
        return chunk

    def add(self, frames: np.ndarray | None, actions: np.ndarray, reward: np.ndarray,
            flags: np.ndarray, version: int | np.ndarray, cam: np.ndarray | None = None,
            state: np.ndarray | None = None, current_version: int | None = None) -> None:
        """Append one record to every env's stream; full chunks are sent (blocking).
        frames: uint8 [N, 3, H, W], or None for a sender made with frames=False."""
        if not self.frames:
            if frames is not None:
                raise ValueError("this sender sends no frames (frames=False); got frames")
        elif (not isinstance(frames, np.ndarray) or frames.shape != self._frames_shape
              or frames.dtype != np.uint8):
            raise ValueError(f"frames must be uint8 {self._frames_shape}; got "
                             f"{getattr(frames, 'dtype', None)} {getattr(frames, 'shape', None)}")
        if actions.shape != self._actions_shape:
            raise ValueError(f"actions must be {self._actions_shape}; got {actions.shape}")
        if reward.shape != self._env_shape or flags.shape != self._env_shape:
            raise ValueError(f"reward and flags must be [{self.num_envs}]; got {reward.shape}, "
                             f"{flags.shape}")
        if self.state_dim and (state is None or state.shape != self._state_shape):
            raise ValueError(f"state must be {self._state_shape}")
        c = self._chunk
        # One write per field for all envs, through record views made once per chunk (the hot
        # path: bench/bench_transport.py).
        obs, action, rew, flg, ver, cm, st = c.rows[c.size]
        if obs is not None:
            obs[...] = frames
        action[...] = actions
        rew[...] = reward
        flg[...] = flags
        ver[...] = version
        if cam is None:
            cm.fill(0)  # a reused chunk still holds an older chunk's values
        else:
            cm[...] = cam
        if st is not None:
            st[...] = state
        c.size += 1
        if c.size == self.steps_per_message:
            self.flush(current_version)

    def flush(self, current_version: int | None = None) -> None:
        """Send every env's buffered records (also at shutdown: the learner keeps what it got)."""
        c = self._chunk
        t = c.size
        if t == 0:
            return
        msg = None
        try:
            for e in range(self.num_envs):
                msg = steps_message(self.actor_id, e, self.seq[e], self.step0[e],
                                    None if c.obs is None else c.obs[e, :t],
                                    c.action[e, :t], c.reward[e, :t], c.flags[e, :t],
                                    c.version[e, :t], c.cam[e, :t],
                                    None if c.state is None else c.state[e, :t])
                start = time.perf_counter()
                self._send(msg)
                self.send_seconds += time.perf_counter() - start
                self.seq[e] += 1
            if current_version is not None:
                self.lag_sum += int(np.sum(current_version - c.version[:, :t].astype(np.int64)))
            self.records_sent += t * self.num_envs
            self.messages_sent += self.num_envs
        finally:  # also when a send raised: those records are not sent twice
            for e in range(self.num_envs):
                # Every stream moves past these records, sent or not: a stream that lost them
                # must show the learner a gap (step0 jumps), never link across them.
                self.step0[e] += t
            msg = None  # so that a chunk ZeroMQ has already released counts as free below
            self._chunk = self._take_chunk()  # the sent arrays belong to ZeroMQ until released
