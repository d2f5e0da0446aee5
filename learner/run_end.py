"""The end of a learner run (docs/INTERFACES.md, "The service").

Once the env-step budget is reached the actors are held (the receiver stops reading the data
socket) and the learner finishes the updates it owes; then the final policy is evaluated. The run
ends when that evaluation is recorded, or when no evaluation made progress (heartbeats) for
`timeout_s`; then `release_actors` publishes `stop` while the receiver drains the data socket,
so that held actors unblock, read it and exit.
"""
from __future__ import annotations

import logging
import time

from learner.broadcaster import Broadcaster
from learner.evaluation import EvalSchedule
from learner.receiver import Receiver

log = logging.getLogger("learner.service")


class FinalEvaluation:
    """The final evaluation's deadline: extended while evaluations make progress."""

    def __init__(self, evaluator: EvalSchedule, timeout_s: float) -> None:
        self.evaluator = evaluator
        self.timeout_s = timeout_s
        self.deadline: float | None = None

    @property
    def requested(self) -> bool:
        return self.deadline is not None

    def request(self, env_steps: int, version: int) -> None:
        self.evaluator.request_final(env_steps, version)
        self.deadline = time.monotonic() + self.timeout_s

    def over(self) -> bool:
        """True once the final evaluation is recorded, or has made no progress for timeout_s
        (logged as an error: the run then exits 1)."""
        if self.deadline is None:
            return False
        if self.evaluator.final_done:
            return True
        # Evaluations still making progress (heartbeats) are waited for, however long.
        self.deadline = max(self.deadline, self.evaluator.last_progress + self.timeout_s)
        if time.monotonic() <= self.deadline:
            return False
        log.error("the final evaluation did not complete within %.0f s (evaluators alive: %s): "
                  "exit code 1", self.timeout_s, self.evaluator.alive() or "none")
        return True


def release_actors(receiver: Receiver, broadcaster: Broadcaster, version: int) -> None:
    """Publish `stop` while the receiver drains the data socket: actors held since the budget
    unblock, read it and exit. At least 0.3 s, until no actor sent for 0.3 s (at most 3 s); PUB
    is lossy and stop is idempotent."""
    receiver.draining.set()
    start = time.monotonic()
    while True:
        broadcaster.publish_stop(version)
        time.sleep(0.05)
        waited = time.monotonic() - start
        if waited > 3.0 or (waited >= 0.3 and not receiver.actors(0.3)):
            return
