"""The learner's replay: uint8 frames stored once, stacks rebuilt at sample time.

Actors send each frame once per (actor, env) stream (docs/INTERFACES.md, "Environment stream");
the replay keeps one ring of `capacity` records from all streams interleaved and rebuilds
s = stack(o_{i-S+1}..o_i) and s' = stack(o_{i-S+2}..o_{i+1}) when sampling. Link bookkeeping
(episode starts, gaps, overwrites) lives in `learner.replay_index`.

Memory: everything is allocated in the constructor (frames in pinned host memory when the target
is CUDA, or on the GPU with on_gpu=True; two pinned staging buffers of `batch_size` rows) and never
grows; `describe()` states the total for the start-up log. A replay made with pixels=False (an
encoder that needs no pixels: `state`) stores no frames at all: its frame storage and staging
have zero channels (0 bytes), `add` takes obs=None and refuses frames, and batches carry empty
obs / next_obs [B, 0, H, W] next to state / next_state.

Threads: one receiver thread calls `add` while one trainer thread calls `sample`. `add` holds the
lock while it copies its chunk. `sample` holds it only to choose slots; it gathers outside the lock
and then checks that no record it read was overwritten meanwhile (links are global record numbers,
so the check is `anchor >= oldest`); if one was, it samples again under the lock (rare).
With on_gpu=True, `sample` launches the device gather under the lock and records an event; `add`
writes frames on its own CUDA stream after that event and waits for the write before unlocking,
so samples on any stream (the trainer prefetches on a side stream) never see a half-written slot.

Sampling is uniform over valid transitions in O(batch): random filled slots are drawn and invalid
ones rejected, for a few rounds of 2x the missing count; only if valid slots are very rare (e.g. an
almost empty replay fed by many streams) does it fall back to listing the valid slots, O(capacity).
"""
from __future__ import annotations

import threading
from typing import Optional

import numpy as np
import torch

from fpac_async.agent.batch import Batch
from fpac_async.wire.protocol import FIRST, TERMINAL, TRUNCATED
from learner.replay_index import ReplayIndex

_REJECTION_ROUNDS = 4


def _host(shape: tuple, dtype: torch.dtype, pin: bool) -> tuple[torch.Tensor, np.ndarray]:
    """A zeroed host tensor (pinned if asked) and its numpy view (same memory)."""
    t = torch.zeros(shape, dtype=dtype, pin_memory=pin)
    return t, t.numpy()


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


class Replay:
    """Ring buffer of stream records; `sample` returns `fpac_async.agent.batch.Batch` on `device`."""

    def __init__(self, capacity: int, frame_shape: tuple[int, int, int], action_dim: int,
                 frame_stack: int = 2, state_dim: int = 0, device: str | torch.device = "cpu",
                 pin_memory: Optional[bool] = None, on_gpu: bool = False, seed: int = 0,
                 batch_size: int = 128, pixels: bool = True) -> None:
        if len(frame_shape) != 3 or frame_shape[0] != 3 or min(frame_shape) < 1:
            raise ValueError(f"frame_shape must be (3, H, W); got {tuple(frame_shape)}")
        if action_dim < 1 or state_dim < 0 or batch_size < 1:
            raise ValueError(f"need action_dim >= 1, state_dim >= 0, batch_size >= 1; got "
                             f"{action_dim}, {state_dim}, {batch_size}")
        if not pixels and state_dim < 1:
            raise ValueError("a replay without frames (pixels=False) needs state_dim >= 1: the "
                             "state is then the only observation")
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if on_gpu and not cuda:
            raise ValueError(f"on_gpu=True needs a CUDA device; got device={self.device}")
        # Pinning only pays (and only works) with a CUDA target; auto means "when copying to CUDA".
        self.pinned = (cuda and torch.cuda.is_available()) if pin_memory is None else bool(pin_memory)
        self.capacity, self.frame_shape = int(capacity), tuple(int(x) for x in frame_shape)
        self.action_dim, self.state_dim, self.stack = int(action_dim), int(state_dim), int(frame_stack)
        self.on_gpu, self.batch_size = bool(on_gpu), int(batch_size)
        self.pixels = bool(pixels)
        self._index = ReplayIndex(self.capacity, self.stack)
        n, pin = self.capacity, self.pinned and not self.on_gpu
        # What is stored per record: the frame, or nothing (zero channels: every array built from
        # it below, storage and staging, holds 0 bytes, and batches get obs [B, 0, H, W]).
        self._stored = self.frame_shape if self.pixels else (0, *self.frame_shape[1:])
        frames_bytes = n * int(np.prod(self._stored))
        if self.on_gpu:
            free, _ = torch.cuda.mem_get_info(self.device)
            if frames_bytes > 0.8 * free:
                raise ValueError(f"replay frames need {frames_bytes / 1e9:.2f} GB but the GPU has "
                                 f"{free / 1e9:.2f} GB free; use on_gpu=False or a smaller capacity")
            self._frames_t = torch.zeros((n, *self._stored), dtype=torch.uint8, device=self.device)
            self._frames = None
        else:
            self._frames_t, self._frames = _host((n, *self._stored), torch.uint8, pin)
        # Small per-record data stays on the host (under 1% of the bytes) in every mode.
        self._action = np.zeros((n, self.action_dim), np.float32)
        self._reward = np.zeros(n, np.float32)
        self._flags = np.zeros(n, np.uint8)
        self._version = np.zeros(n, np.int32)
        self._cam = np.zeros((n, 2), np.float32)
        self._state = np.zeros((n, self.state_dim), np.float32)
        # Staging: [S+1] frames per row (obs and next_obs share S-1 of them) and one float row of
        # action | reward | discount | cam | next_cam | state | next_state; double-buffered.
        self._width = self.action_dim + 6 + 2 * self.state_dim
        rows = 0 if self.on_gpu else self.batch_size  # on_gpu gathers frames on the device
        self._staging = [(_host((rows, self.stack + 1, *self._stored), torch.uint8, pin),
                          _host((self.batch_size, self._width), torch.float32, self.pinned),
                          _host((self.batch_size, self.stack + 1), torch.int64, self.pinned))
                         for _ in range(2)]
        self._events = [torch.cuda.Event() for _ in range(2)] if cuda else [None, None]
        if self.on_gpu:  # frame writes get their own stream, ordered after launched gathers
            self._write_stream, self._gathered = torch.cuda.Stream(self.device), torch.cuda.Event()
        self._turn = 0
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()  # receiver (add) vs trainer (sample)
        self._sample_lock = threading.Lock()  # staging buffers and rng: one sampler at a time

    # ---------------------------------------------------------------- size and start-up log
    def __len__(self) -> int:
        return min(self._index.total, self.capacity)

    @property
    def num_valid(self) -> int:
        return self._index.num_valid

    @property
    def nbytes(self) -> int:
        arrays = (self._action, self._reward, self._flags, self._version, self._cam, self._state)
        staging = sum(t.nbytes for bufs in self._staging for t, _ in bufs)
        return (self._frames_t.nbytes + sum(a.nbytes for a in arrays) + staging
                + self._index.nbytes)

    def describe(self) -> str:
        c, h, w = self.frame_shape
        where = "GPU memory" if self.on_gpu else ("pinned host memory" if self.pinned else "host memory")
        if not self.pixels:
            return (f"replay: {self.capacity} transitions, no frames (the encoder needs no "
                    f"pixels): 0 B of frame storage; {self.state_dim}-dim state per record; "
                    f"{_size(self.nbytes)} per-record data, links and 2x{self.batch_size}-row "
                    f"staging in all, fixed")
        return (f"replay: {self.capacity} transitions x {c}x{h}x{w} uint8 = "
                f"{_size(self._frames_t.nbytes)} {where}, {self.stack}-frame stacks rebuilt at "
                f"sample time; + {_size(self.nbytes - self._frames_t.nbytes)} per-record data, "
                f"links and 2x{self.batch_size}-row staging; total {_size(self.nbytes)}, fixed")

    # ---------------------------------------------------------------- adding records
    def add(self, stream: tuple[int, int], step0: int, obs: Optional[np.ndarray],
            action: np.ndarray, reward: np.ndarray, flags: np.ndarray,
            version: Optional[np.ndarray] = None, cam: Optional[np.ndarray] = None,
            state: Optional[np.ndarray] = None) -> None:
        """Append a chunk of T consecutive records of `stream` whose first has index `step0`.

        `state` is dropped when the replay stores none (state_dim=0); it is required otherwise.
        `obs` is uint8 [T, 3, H, W], or None (and nothing else) for a replay with pixels=False.
        """
        if self.pixels:
            if obs is None:
                raise ValueError(f"obs uint8 [T, {', '.join(map(str, self.frame_shape))}] is "
                                 f"required (this replay stores frames)")
            t = self._check("obs", obs, np.uint8, (None, *self.frame_shape))
        else:
            if obs is not None:
                raise ValueError("this replay stores no frames (pixels=False): obs must be None")
            t = self._check("action", action, np.float32, (None, self.action_dim))
        if t < 1 or t > self.capacity:
            raise ValueError(f"a chunk must hold 1..capacity ({self.capacity}) records; got {t}")
        self._check("action", action, np.float32, (t, self.action_dim))
        self._check("reward", reward, np.float32, (t,))
        self._check("flags", flags, np.uint8, (t,))
        if np.any(flags & ~np.uint8(FIRST | TERMINAL | TRUNCATED)):
            raise ValueError(f"flags may only combine FIRST=1, TERMINAL=2, TRUNCATED=4; got {flags}")
        if version is not None:
            self._check("version", version, np.int32, (t,))
        if cam is not None:
            self._check("cam", cam, np.float32, (t, 2))
        if self.state_dim:
            if state is None:
                raise ValueError(f"state f32 [T, {self.state_dim}] is required (replay state_dim > 0)")
            self._check("state", state, np.float32, (t, self.state_dim))
        if len(stream) != 2 or int(step0) < 0:
            raise ValueError(f"stream must be (actor, env) and step0 >= 0; got {stream}, {step0}")
        key, step0 = (int(stream[0]), int(stream[1])), int(step0)
        with self._lock:
            slots = np.fromiter((self._index.append(key, step0 + k, bool(flags[k] & FIRST))
                                 for k in range(t)), np.int64, t)
            if not self.pixels:
                pass  # no frames to write
            elif self.on_gpu:  # after every gather already launched, finished before we unlock
                with torch.cuda.stream(self._write_stream):
                    self._write_stream.wait_event(self._gathered)
                    self._frames_t[torch.from_numpy(slots).to(self.device)] = (
                        torch.from_numpy(np.ascontiguousarray(obs)).to(self.device))
                self._write_stream.synchronize()
            else:
                self._frames[slots] = obs
            self._action[slots], self._reward[slots], self._flags[slots] = action, reward, flags
            self._version[slots] = 0 if version is None else version
            self._cam[slots] = 0.0 if cam is None else cam
            if self.state_dim:
                self._state[slots] = state

    @staticmethod
    def _check(name: str, a: np.ndarray, dtype: type, shape: tuple) -> int:
        if not isinstance(a, np.ndarray):
            raise ValueError(f"{name} must be a numpy array; got {type(a).__name__}")
        if a.dtype != dtype:
            raise ValueError(f"{name} must be {np.dtype(dtype)}; got {a.dtype}")
        if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
            want = "x".join("T" if s is None else str(s) for s in shape)
            raise ValueError(f"{name} must have shape [{want}]; got {list(a.shape)}")
        return int(a.shape[0])

    # ---------------------------------------------------------------- sampling
    def sample(self, batch_size: Optional[int] = None) -> Batch:
        """B transitions drawn uniformly (with replacement) from the valid ones, on `device`."""
        b = self.batch_size if batch_size is None else int(batch_size)
        if not 1 <= b <= self.batch_size:
            raise ValueError(f"batch_size must be in 1..{self.batch_size} (the staging size); got {b}")
        with self._sample_lock:
            if self.on_gpu:  # launching the device gather is quick: do it all under the lock
                with self._lock:
                    out = self._gather(*self._choose(b)[:2])
                    self._gathered.record()  # later adds' writes wait for this gather (see add)
                return self._finish(out, b)
            with self._lock:
                slots, idx, anchor = self._choose(b)
            out = self._gather(slots, idx)
            with self._lock:
                torn = bool(np.any(anchor < self._index.oldest))
                if torn:  # a record was overwritten while we read it: redo under the lock
                    slots, idx, _ = self._choose(b)
                    out = self._gather(slots, idx)
            return self._finish(out, b)

    def _choose(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ix = self._index
        if ix.num_valid == 0:
            raise RuntimeError(f"no valid transitions to sample ({len(self)} records stored)")
        picked, need = [], b
        for _ in range(_REJECTION_ROUNDS):
            cand = self._rng.integers(0, len(self), size=max(2 * need, 16))
            cand = cand[ix.valid[cand]][:need]
            picked.append(cand)
            need -= len(cand)
            if need == 0:
                break
        if need:  # valid slots are rare: list them (O(capacity), only on a nearly empty replay)
            picked.append(self._rng.choice(np.flatnonzero(ix.valid), size=need))
        slots = np.concatenate(picked)
        return slots, ix.stacks(slots), ix.anchor[slots].copy()

    def _gather(self, slots: np.ndarray, idx: np.ndarray) -> tuple:
        """Fill the next staging buffer (waiting for its previous copy to the device to finish)."""
        b, s, a, d = len(slots), self.stack, self.action_dim, self.state_dim
        (frames_t, frames), (small_t, small), (idx_t, idx_np) = self._staging[self._turn]
        if self._events[self._turn] is not None:
            self._events[self._turn].synchronize()
        nxt = idx[:, s]
        rows = small[:b]
        rows[:, :a] = self._action[nxt]
        rows[:, a] = self._reward[nxt]
        rows[:, a + 1] = (self._flags[nxt] & TERMINAL) == 0  # TRUNCATED bootstraps: discount 1
        rows[:, a + 2:a + 4] = self._cam[slots]
        rows[:, a + 4:a + 6] = self._cam[nxt]
        rows[:, a + 6:a + 6 + d] = self._state[slots]
        rows[:, a + 6 + d:] = self._state[nxt]
        if self.on_gpu:  # gather on the device now, before sample() checks for overwrites
            idx_np[:b] = idx
            return self._frames_t[idx_t[:b].to(self.device, non_blocking=self.pinned)], small_t[:b]
        np.take(self._frames, idx, axis=0, out=frames[:b])
        return frames_t[:b], small_t[:b]

    def _finish(self, staged: tuple, b: int) -> Batch:
        """Copy the staged rows to the device (async from pinned memory) and split them."""
        frames, small = staged
        if self.device.type == "cpu":
            # Staging is reused two calls later: every field is cloned out of it (one copy each).
            def fresh(t: torch.Tensor) -> torch.Tensor:
                return t.clone(memory_format=torch.contiguous_format)
        else:
            small = small.to(self.device, non_blocking=self.pinned)
            frames = frames.to(self.device, non_blocking=self.pinned)  # no-op when on_gpu
            if self._events[self._turn] is not None:
                self._events[self._turn].record()

            def fresh(t: torch.Tensor) -> torch.Tensor:  # already a device copy
                return t.contiguous()
        self._turn ^= 1
        c, h, w = self._stored  # c = 0 without frames: obs and next_obs are [B, 0, H, W]
        s, a, d = self.stack, self.action_dim, self.state_dim
        return Batch(obs=fresh(frames[:, :s]).reshape(b, s * c, h, w),
                     action=fresh(small[:, :a]), reward=fresh(small[:, a]),
                     discount=fresh(small[:, a + 1]),
                     next_obs=fresh(frames[:, 1:]).reshape(b, s * c, h, w),
                     cam=fresh(small[:, a + 2:a + 4]), next_cam=fresh(small[:, a + 4:a + 6]),
                     state=fresh(small[:, a + 6:a + 6 + d]) if d else None,
                     next_state=fresh(small[:, a + 6 + d:]) if d else None)

    # ---------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict:
        """Numpy arrays of the filled slots plus stream bookkeeping and the sampling rng."""
        with self._lock:
            n = len(self)
            frames = self._frames_t[:n].cpu().numpy().copy()
            d = {"capacity": self.capacity, "frames": frames, "index": self._index.state_dict(),
                 "rng": self._rng.bit_generator.state}
            for name in ("action", "reward", "flags", "version", "cam", "state"):
                d[name] = getattr(self, "_" + name)[:n].copy()
            return d

    def load_state_dict(self, d: dict) -> None:
        if int(d["capacity"]) != self.capacity or tuple(d["frames"].shape[1:]) != self._stored:
            raise ValueError(f"replay state is for capacity {d['capacity']} x "
                             f"{tuple(d['frames'].shape[1:])}; this replay is {self.capacity} x "
                             f"{self._stored}" + ("" if self.pixels else " (no frames)"))
        with self._lock:
            n = len(d["frames"])
            self._index.load_state_dict(d["index"])
            self._frames_t[:n] = torch.from_numpy(np.ascontiguousarray(d["frames"]))
            for name in ("action", "reward", "flags", "version", "cam", "state"):
                getattr(self, "_" + name)[:n] = d[name]
            self._rng.bit_generator.state = d["rng"]
