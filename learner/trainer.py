"""SAC updates at an enforced replay ratio (docs/INTERFACES.md, "The service: Counters").

Two parts:
- `ReplayRatio`: pure integer accounting of updates owed per agent step and of the receiver's
  admission rule (backpressure), exact for any rational ratio (no float drift over millions of
  steps).
- `Trainer`: runs the owed updates in bounded chunks, applies the learning-rate schedule and
  returns the chunk's mean metrics with ONE host-device sync per call.

On CUDA the next batch is sampled while the current update runs: the replay's gather and the
host-to-device copy are issued on a side stream after the update's kernels are queued, so the copy
overlaps the update's compute (double buffering). The trainer itself never waits on the host for
a copy: reuse of the sampler's staging memory is the sampler's job (`learner.replay.Replay` keeps
two staging buffers, each with its own copy-done event, so gathering batch i+1 waits only for
the copy of batch i-1). The compute stream waits for a batch's copy with a device-side
`wait_event`. (Before, the trainer also host-synchronised on the copy of the batch handed out
last before each prefetch, which turned the two staging buffers into one.) How the update itself
runs (eager, torch.compile, CUDA graphs) is SAC's setting (fpac_async.agent.update_modes).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any, Dict, List, Optional, Protocol, Union

import torch
from torch import Tensor

from fpac_async.agent.batch import Batch
from fpac_async.config import AgentConfig, ReplayConfig, lr_at


class ReplayRatio:
    """Updates owed and admission for `ratio` SAC updates per agent step after `initial` steps.

    owed = max(0, floor(ratio * (agent_steps - initial)) - updates) once agent_steps >= initial.
    The receiver admits new steps only while agent_steps <= initial + (updates + slack) / ratio,
    i.e. while the learner is at most `slack` updates behind.
    The ratio is held as a Fraction (a float like 0.3 becomes exactly 3/10, 1/3 stays 1/3), so
    every comparison is integer arithmetic. A ratio of 0 runs no updates and admits everything
    (actor and transport throughput studies).
    """

    def __init__(self, ratio: Union[float, int, Fraction], initial_agent_steps: int,
                 slack_updates: int = 64):
        frac = ratio if isinstance(ratio, Fraction) else Fraction(ratio).limit_denominator(10**6)
        if frac < 0:
            raise ValueError(f"replay ratio must be >= 0; got {ratio!r}")
        if initial_agent_steps < 0 or slack_updates < 0:
            raise ValueError(f"initial_agent_steps ({initial_agent_steps}) and slack_updates "
                             f"({slack_updates}) must be >= 0")
        self.ratio = frac
        self.initial = int(initial_agent_steps)
        self.slack = int(slack_updates)
        self._num, self._den = frac.numerator, frac.denominator

    def due(self, agent_steps: int) -> int:
        """Total updates due after `agent_steps` agent steps: floor(ratio * (steps - initial))."""
        trained = int(agent_steps) - self.initial
        if trained < 0:
            return 0
        return (trained * self._num) // self._den

    def owed(self, agent_steps: int, updates: int) -> int:
        """Updates still to run now."""
        return max(0, self.due(agent_steps) - int(updates))

    def admissible(self, updates: int) -> int | None:
        """The most agent steps admit() lets in at `updates` updates (None: a ratio of 0)."""
        if self._num == 0:
            return None
        return self.initial + ((int(updates) + self.slack) * self._den) // self._num

    def admit(self, agent_steps: int, updates: int) -> bool:
        """Whether the receiver may accept more steps: steps - initial <= (updates + slack) / ratio,
        multiplied out as (steps - initial) * num <= (updates + slack) * den."""
        if self._num == 0:
            return True
        return ((int(agent_steps) - self.initial) * self._num
                <= (int(updates) + self.slack) * self._den)


class _Sampler(Protocol):
    num_valid: int

    def sample(self, batch_size: int) -> Batch: ...


class _Learner(Protocol):
    def update(self, batch: Batch) -> Dict[str, Tensor]: ...

    def set_lr(self, lr: float) -> None: ...


class Trainer:
    """Runs the SAC updates the replay ratio owes, at most `max_updates` per `train` call."""

    def __init__(self, sac: _Learner, replay: _Sampler, agent_cfg: AgentConfig,
                 replay_cfg: ReplayConfig, batch_size: Optional[int] = None,
                 device: Union[str, torch.device] = "cpu", slack_updates: int = 64,
                 overlap: Optional[bool] = None):
        self.sac = sac
        self.replay = replay
        self.agent_cfg = agent_cfg
        self.batch_size = int(batch_size if batch_size is not None else agent_cfg.batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size}")
        self.device = torch.device(device)
        self.ratio = ReplayRatio(replay_cfg.replay_ratio, replay_cfg.initial_random_steps,
                                 slack_updates)
        self.updates = 0
        """Updates run so far (restored from a checkpoint's counters on resume)."""
        self.lr: Optional[float] = None
        """The learning rate last handed to sac.set_lr (None: not yet set by this trainer)."""
        # Side-stream prefetch only where there is something to overlap (CUDA).
        self.overlap = (self.device.type == "cuda") if overlap is None else bool(overlap)
        if self.overlap and self.device.type != "cuda":
            raise ValueError("overlap=True needs a CUDA device")
        self._stream = torch.cuda.Stream(self.device) if self.overlap else None
        self._initial = int(replay_cfg.initial_random_steps)
        self._refill: Optional[tuple[int, int]] = None  # (agent steps at the start, replay size)
        self._pending: Optional[tuple[Batch, Any]] = None  # (batch, copy-done event)

    # ------------------------------------------------------------------ accounting helpers
    def owed(self, agent_steps: int) -> int:
        return self.ratio.owed(agent_steps, self.updates)

    def admit(self, agent_steps: int) -> bool:
        """For the receiver thread: may it accept more steps now? Always while refilling."""
        return self._refill is not None or self.ratio.admit(agent_steps, self.updates)

    def ratio_offset(self, agent_steps: int) -> int:
        """Agent steps excluded from the replay ratio besides the initial random ones: the
        refills of resumes without a saved replay, one still running included up to
        `agent_steps` (kept in checkpoints)."""
        running = 0 if self._refill is None else max(0, int(agent_steps) - self._refill[0])
        return self.ratio.initial - self._initial + running

    @property
    def refilling(self) -> bool:
        return self._refill is not None

    def start_refill(self, agent_steps: int, size: int) -> None:
        """A resume without the saved replay: take `size` transitions (acted by the current
        policy) before the next update, and owe no updates for them, as for the initial random
        steps of a fresh run. Without this the first updates would draw batches of 128 from a
        few dozen transitions."""
        self._refill = (int(agent_steps), int(size))

    def poll_refill(self, agent_steps: int) -> bool:
        """End the refill once the replay holds its size; True when no refill is running.
        `agent_steps` must be the count that the replay's contents correspond to (the service
        reads both under the receiver's snapshot lock): the refill's steps owe no updates."""
        if self._refill is not None and self.replay.num_valid >= self._refill[1]:
            self.end_refill(agent_steps)
        return self._refill is None

    def end_refill(self, agent_steps: int) -> None:
        """End a refill now (it is full, or no more steps will come: the budget is reached);
        its steps owe no updates."""
        if self._refill is not None:
            self.ratio.initial += max(0, int(agent_steps) - self._refill[0])
            self._refill = None

    def state_dict(self, agent_steps: int = 0) -> Dict[str, int]:
        return {"updates": int(self.updates), "ratio_offset": self.ratio_offset(agent_steps)}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.updates = int(state["updates"])
        self.ratio.initial = self._initial + int(state.get("ratio_offset", 0))
        self.lr = None  # re-apply the schedule on the next call (the optimizer state holds an lr)
        self._pending = None

    # ------------------------------------------------------------------------- training
    def train(self, agent_steps: int, env_steps: int,
              max_updates: int = 64) -> Optional[Dict[str, float]]:
        """Run min(owed, max_updates) updates. Returns the mean of each metric over them plus
        'lr' and 'updates_run', or None when no update ran (nothing owed or replay empty)."""
        if self._refill is not None:
            return None  # refilling: no update until poll_refill ends it
        n = min(self.owed(agent_steps), int(max_updates))
        if n <= 0 or self.replay.num_valid < 1:
            return None
        lr = lr_at(self.agent_cfg, env_steps)
        if lr != self.lr:
            self.sac.set_lr(lr)
            self.lr = lr
        sums: Dict[str, List[Tensor]] = {}
        for _ in range(n):
            metrics = self.sac.update(self._next_batch())
            if self.overlap:
                self._prefetch()  # issued after the update's kernels: the copy overlaps them
            for key, value in metrics.items():
                sums.setdefault(key, []).append(value.detach())
            self.updates += 1
        out = self._reduce(sums)
        out["lr"] = lr
        out["updates_run"] = float(n)
        return out

    def _reduce(self, sums: Dict[str, List[Tensor]]) -> Dict[str, float]:
        """Mean per metric, read back in one device-to-host transfer (the call's only sync)."""
        if not sums:
            return {}
        keys = list(sums)
        means = torch.stack([torch.stack(sums[k]).float().mean().to(self.device) for k in keys])
        return dict(zip(keys, (float(v) for v in means.tolist())))

    def _next_batch(self) -> Batch:
        if not self.overlap:
            batch = self.replay.sample(self.batch_size)
            return batch if batch.obs.device == self.device else batch.to(self.device)
        if self._pending is None:
            self._prefetch()
        assert self._pending is not None
        batch, done = self._pending
        self._pending = None
        current = torch.cuda.current_stream(self.device)
        current.wait_event(done)
        for t in _tensors(batch):
            # The batch was allocated on the side stream but is used (and freed) on this one:
            # tell the caching allocator, so the memory is not reused while kernels still read it.
            t.record_stream(current)
        return batch

    def _prefetch(self) -> None:
        """Sample the next batch and issue its host-to-device copy on the side stream. No host
        wait here: the sampler guards its own staging buffers (module docstring)."""
        assert self._stream is not None
        with torch.cuda.stream(self._stream):
            batch = self.replay.sample(self.batch_size)
            if batch.obs.device != self.device:
                batch = batch.to(self.device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self._stream)
        self._pending = (batch, done)


def _tensors(batch: Batch) -> List[Tensor]:
    return [t for t in (batch.obs, batch.action, batch.reward, batch.discount, batch.next_obs,
                        batch.cam, batch.next_cam, batch.state, batch.next_state)
            if t is not None]

