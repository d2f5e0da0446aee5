"""Evaluation schedule: when to ask for deterministic episodes, of which evaluator, what came back.

Pure bookkeeping (no sockets, injectable clock): the service publishes the requests `poll` returns
and feeds in what the evaluators send on the control socket (hello, heartbeat, eval_result).
Evaluation runs in dedicated evaluator processes (actors/eval_loop.py), never in the training
actors, so training never pauses for it.

- Due every `every_env_steps` env steps, and once for the final policy (`request_final`). One
  request is outstanding at a time; the final one waits for a periodic one still running.
- Liveness by heartbeat: an evaluator sends one every second, also while it runs episodes (then
  with the request's id and the episodes done). A request is re-issued to another evaluator only
  when its target's heartbeats stop (HEARTBEAT_TIMEOUT_S), or when it made no progress (no
  heartbeat sent from between the request's env steps) for longer than a timeout sized to the
  cost of evaluations: max(timeout_s, 3 x the longest one seen so far). With no other evaluator alive the same request (same id) is
  published again instead: a new id would throw away the episodes already run.
- PUB is lossy: while the target's heartbeats say it is idle and not working on the request, the
  same request (same id) is re-published every REPUBLISH_S.
- Each result is recorded at the env steps of the policy version it evaluated (the service maps
  versions to env steps when it broadcasts them), with the wall-clock time it finished.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

HEARTBEAT_TIMEOUT_S = 15.0  # an evaluator silent this long is gone (it beats every second)
REPUBLISH_S = 5.0  # re-publish a request its idle target has not picked up after this long
COST_FACTOR = 3.0  # a request times out after COST_FACTOR x the longest evaluation seen


@dataclass(frozen=True)
class EvalRequest:
    eval_id: int
    target: int  # evaluator id
    episodes: int
    env_steps: int  # the training progress when it was asked for
    version: int  # the policy version it asks to evaluate
    issued_at: float
    final: bool


@dataclass(frozen=True)
class EvalRecord:
    env_steps: int  # env steps of the evaluated policy version (the learning curve's x)
    version: int
    mean_return: float
    returns: tuple[float, ...]
    lengths: tuple[int, ...]
    evaluator: int
    final: bool
    finished_at: float  # time.time() when the result arrived
    wall_s: float  # how long the episodes took in the evaluator
    requested_env_steps: int  # the training progress when it was asked for


@dataclass
class _Beat:
    last: float
    busy: bool = False
    eval_id: int | None = None
    episodes_done: int = 0


class EvalSchedule:
    """See the module docstring. Call `poll` from the main loop; it returns a request to publish."""

    def __init__(self, every_env_steps: int, episodes: int, timeout_s: float,
                 start_env_steps: int = 0, clock: Callable[[], float] = time.monotonic,
                 heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S) -> None:
        self.every = int(every_env_steps)
        self.episodes = int(episodes)
        self.timeout_s = float(timeout_s)
        self.heartbeat_timeout_s = float(heartbeat_timeout_s)
        self.clock = clock
        self.enabled = self.every > 0 and self.episodes > 0
        # The next periodic evaluation: the first multiple of `every` after the start (resume).
        self.next_at = (start_env_steps // self.every + 1) * self.every if self.every > 0 else 0
        self.pending: EvalRequest | None = None
        self.history: list[EvalRecord] = []
        self.final_requested = False
        self.final_done = not self.enabled
        self._final: tuple[int, int] = (0, 0)  # (env_steps, version) of the final policy
        self._due: tuple[int, int] | None = None  # a periodic evaluation waiting for an evaluator
        self._beats: dict[int, _Beat] = {}
        self._published_at = 0.0
        self._progress = 0.0  # clock time of the last heartbeat working on the pending request
        self.last_progress = 0.0  # clock time of the last sign of work on the pending request
        self._longest_s = 0.0
        self._warned_none = False
        # Ids unique across learner restarts: evaluators outlive a learner, and a late answer to
        # an old request must never match a new one.
        self._next_id = int(time.time() * 1000) % 2**40
        self._rotation = 0

    # ------------------------------------------------------------------ evaluators
    def on_heartbeat(self, evaluator: int, busy: bool = False, eval_id: int | None = None,
                     episodes_done: int = 0) -> None:
        """A hello or heartbeat from `evaluator` (a hello is a heartbeat of an idle evaluator)."""
        now = self.clock()
        self._beats[evaluator] = _Beat(now, busy, eval_id, episodes_done)
        p = self.pending
        if p is not None and evaluator == p.target and eval_id == p.eval_id:
            # Sent between the env steps of this request's episodes: it is making progress.
            self._progress = self.last_progress = now

    def alive(self) -> list[int]:
        now = self.clock()
        return sorted(e for e, b in self._beats.items()
                      if now - b.last <= self.heartbeat_timeout_s)

    @property
    def timeout(self) -> float:
        """Seconds a request may run: max(timeout_s, COST_FACTOR x the longest evaluation)."""
        return max(self.timeout_s, COST_FACTOR * self._longest_s)

    @property
    def last_mean(self) -> float | None:
        return self.history[-1].mean_return if self.history else None

    # ------------------------------------------------------------------ requests
    def request_final(self, env_steps: int, version: int) -> None:
        """The run reached its budget: evaluate the final policy (after any periodic one)."""
        if not self.enabled or self.final_requested:
            return
        self.final_requested = True
        self._final = (int(env_steps), int(version))
        self._due = None  # the final evaluation stands for any periodic one not yet started

    def poll(self, env_steps: int, version: int) -> EvalRequest | None:
        """A request to publish now (new, re-issued or re-published), or None."""
        if not self.enabled or self.final_done:
            return None
        if not self.final_requested and env_steps >= self.next_at:
            # Skip every due point already passed: one evaluation stands for the latest of them.
            self.next_at = (env_steps // self.every + 1) * self.every
            self._due = (int(env_steps), int(version))
        now = self.clock()
        alive = self.alive()
        p = self.pending
        if p is not None:
            if p.target not in alive:
                log.warning("evaluation %d: evaluator %d stopped sending heartbeats; re-issuing",
                            p.eval_id, p.target)
                return self._issue(p.env_steps, p.version, p.final, alive, now, avoid=p.target)
            if now - max(p.issued_at, self._progress) > self.timeout:
                others = [e for e in alive if e != p.target]
                log.warning("evaluation %d on evaluator %d made no progress for %.0f s; %s",
                            p.eval_id, p.target, self.timeout,
                            "re-issuing it to another evaluator" if others else "asking again")
                if not others:  # the same id: the episodes it ran still count
                    self._published_at = self._progress = now
                    return p
                return self._issue(p.env_steps, p.version, p.final, alive, now, avoid=p.target)
            beat = self._beats[p.target]
            working = beat.eval_id == p.eval_id
            if not working and not beat.busy and now - self._published_at > REPUBLISH_S:
                self._published_at = now  # the PUB message was lost: the same request again
                return p
            return None
        if self._due is not None:
            env, ver = self._due
            request = self._issue(env, ver, False, alive, now)
            if request is not None:
                self._due = None
            return request
        if self.final_requested:
            return self._issue(*self._final, True, alive, now)
        return None

    def _issue(self, env_steps: int, version: int, final: bool, alive: list[int], now: float,
               avoid: int | None = None) -> EvalRequest | None:
        idle = [e for e in alive if e != avoid and not self._beats[e].busy]
        candidates = idle or [e for e in alive if e != avoid] or alive
        self.pending = None
        if not candidates:
            if not self._warned_none:
                log.warning("an evaluation is due but no evaluator is connected: start one with "
                            "`fpac-actors --evaluator` (fpac-train starts one itself)")
                self._warned_none = True
            if final:
                self._final = (env_steps, version)
            else:
                self._due = (env_steps, version)
            return None
        self._warned_none = False
        target = candidates[self._rotation % len(candidates)]
        self._rotation += 1
        self.pending = EvalRequest(self._next_id, target, self.episodes, env_steps, version, now,
                                   final)
        self._next_id += 1
        self._published_at = self.last_progress = self._progress = now
        return self.pending

    # ------------------------------------------------------------------ results
    def on_result(self, evaluator: int, eval_id: int, returns: list[float], lengths: list[int],
                  version: int, env_steps_of: Callable[[int], int | None],
                  wall_s: float | None = None) -> EvalRecord | None:
        """Record the answer to the pending request; anything else is ignored (None).

        env_steps_of(version): the env steps at which the learner broadcast that policy version
        (None if unknown, e.g. from before a restart: the request's env steps are used then)."""
        p = self.pending
        if p is None or eval_id != p.eval_id or evaluator != p.target or not returns:
            log.info("ignoring eval_result %d from evaluator %d (not the pending request)",
                     eval_id, evaluator)
            return None
        elapsed = self.clock() - p.issued_at
        wall = float(wall_s) if wall_s is not None else elapsed
        self._longest_s = max(self._longest_s, wall, elapsed)
        env_steps = env_steps_of(version)
        record = EvalRecord(p.env_steps if env_steps is None else int(env_steps), int(version),
                            sum(returns) / len(returns), tuple(float(r) for r in returns),
                            tuple(int(n) for n in lengths), evaluator, p.final, time.time(), wall,
                            p.env_steps)
        self.history.append(record)
        self.pending = None
        self.last_progress = self.clock()
        if p.final:
            self.final_done = True
        log.info("evaluation of version %d (%d env steps): mean return %.2f over %d episodes "
                 "(evaluator %d, %.1f s)", record.version, record.env_steps, record.mean_return,
                 len(returns), evaluator, wall)
        return record
