"""Evaluation schedule: when to ask for deterministic episodes, of which actor, and what came back.

Pure bookkeeping (no sockets, injectable clock): the service publishes the requests it returns and
feeds it the `eval_result` messages. An evaluation is due every `every_env_steps` env steps and
once at the end of the run (`request_final`). The target is one of the actors heard from recently
(rotating, so no actor always pays for it); a request is re-issued, under a new id and preferably
to another actor, when its target disappears or it times out. Results with an id other than the
pending one (late answers to a re-issued request) are ignored.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalRequest:
    eval_id: int
    target_actor: int
    episodes: int
    env_steps: int  # the training progress the evaluation stands for
    issued_at: float
    final: bool


@dataclass(frozen=True)
class EvalRecord:
    env_steps: int
    mean_return: float
    returns: tuple[float, ...]
    lengths: tuple[int, ...]
    actor: int
    final: bool


class Evaluator:
    """See the module docstring. Call `poll` from the main loop; it returns a request to publish."""

    def __init__(self, every_env_steps: int, episodes: int, timeout_s: float,
                 start_env_steps: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = int(every_env_steps)
        self.episodes = int(episodes)
        self.timeout_s = float(timeout_s)
        self.clock = clock
        self.enabled = self.every > 0 and self.episodes > 0
        # The next periodic evaluation: the first multiple of `every` after the start (resume).
        self.next_at = (start_env_steps // self.every + 1) * self.every if self.every > 0 else 0
        self.pending: EvalRequest | None = None
        self.history: list[EvalRecord] = []
        self.final_requested = False
        self.final_done = not self.enabled
        # Ids unique across learner restarts: actors outlive a learner, and a late answer to an old
        # request must never match a new one.
        self._next_id = int(time.time() * 1000) % 2**40
        self._rotation = 0

    @property
    def last_mean(self) -> float | None:
        return self.history[-1].mean_return if self.history else None

    def request_final(self, env_steps: int) -> None:
        """The run reached its budget: (re)issue an evaluation of the final policy."""
        if not self.enabled or self.final_requested:
            return
        self.final_requested = True
        self.pending = None  # a periodic one still running evaluated an older policy
        self._final_env_steps = int(env_steps)

    def poll(self, env_steps: int, actors: Iterable[int]) -> EvalRequest | None:
        """A request to publish now, or None."""
        if not self.enabled or self.final_done:
            return None
        present = sorted(set(actors))
        now = self.clock()
        p = self.pending
        if p is not None and p.eval_id < 0:  # waiting for an actor to ask
            return self._issue(p.env_steps, present, now, p.final)
        if p is not None:
            expired = now - p.issued_at > self.timeout_s
            if not expired and p.target_actor in present:
                return None
            log.warning("evaluation %d on actor %d %s; re-issuing", p.eval_id, p.target_actor,
                        "timed out" if expired else "lost its actor")
            return self._issue(p.env_steps, present, now, p.final, avoid=p.target_actor)
        if self.final_requested:
            return self._issue(self._final_env_steps, present, now, True)
        if env_steps >= self.next_at:
            # Skip every due point already passed: one evaluation stands for the latest of them.
            self.next_at = (env_steps // self.every + 1) * self.every
            return self._issue(env_steps, present, now, False)
        return None

    def _issue(self, env_steps: int, present: list[int], now: float, final: bool,
               avoid: int | None = None) -> EvalRequest | None:
        candidates = [a for a in present if a != avoid] or present
        if not candidates:  # nobody to ask: remember the request, ask once an actor appears
            self.pending = EvalRequest(-1, -1, self.episodes, env_steps, now, final)
            return None
        target = candidates[self._rotation % len(candidates)]
        self._rotation += 1
        self.pending = EvalRequest(self._next_id, target, self.episodes, env_steps, now, final)
        self._next_id += 1
        return self.pending

    def on_result(self, actor: int, eval_id: int, returns: list[float],
                  lengths: list[int]) -> EvalRecord | None:
        """Record the answer to the pending request; anything else is ignored (None)."""
        p = self.pending
        if p is None or eval_id != p.eval_id or actor != p.target_actor or not returns:
            log.info("ignoring eval_result %d from actor %d (not the pending request)", eval_id, actor)
            return None
        record = EvalRecord(p.env_steps, sum(returns) / len(returns), tuple(returns),
                            tuple(lengths), actor, p.final)
        self.history.append(record)
        self.pending = None
        if p.final:
            self.final_done = True
        log.info("evaluation at %d env steps: mean return %.2f over %d episodes (actor %d)",
                 record.env_steps, record.mean_return, len(returns), actor)
        return record
