"""The learner says whom it waits for until the first actor or evaluator says hello (issue 20,
"Silent waits"): before, a learner with nobody connecting printed nothing at all.

`WaitingNotice.poll(heard)` logs 'waiting for actors on ...' (its three addresses and the
fpac-actors line that reaches them) at once and every `every_s`, and 'first hello after N s'
when `heard` turns true; it returns True while still waiting. `StartBarrier` holds a new run's first
policy until `--wait-for-actors` actors have said hello.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from fpac_async.wire.transport import learner_endpoints

log = logging.getLogger(__name__)

REPEAT_S = 30.0


class WaitingNotice:
    """See the module docstring."""

    def __init__(self, bind: str, every_s: float = REPEAT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        ep = learner_endpoints(bind)
        self.bind = bind
        self.addresses = f"data {ep.data}, broadcasts {ep.pub}, evaluators {ep.control}"
        self.every_s = every_s
        self._clock = clock
        self._start = clock()
        self._next = self._start

    def poll(self, heard: bool) -> bool:
        """Log what is due; False once an actor or evaluator was heard (stop polling then)."""
        now = self._clock()
        if heard:
            log.info("first hello after %.0f s of waiting", now - self._start)
            return False
        if now >= self._next:
            host_port = self.bind.split("://", 1)[-1].replace("*", "HOST")
            log.info("waiting for actors (%.0f s so far) on %s: start them with fpac-actors "
                     "--learner %s (and the same --task, env flags and --auth)",
                     now - self._start, self.addresses, host_port)
            self._next = now + self.every_s
        return True


class StartBarrier:
    """`--wait-for-actors N`: a new run's first policy is published only once N actors have said
    hello (their hellos pass the checks; they wait for a policy before stepping), so that every
    actor starts with the run: a tiny budget is not spent before the last one has started, and a
    scaling study's first windows see all of its actors. A resumed run does not wait (actors of
    its earlier learner may be mid-stream and say hello only once a policy names the new run).

    `open(accepted)` is True once the barrier is passed (and stays so); while closed it logs
    'waiting for N actors: K said hello' at once and every `every_s`."""

    def __init__(self, n: int, resumed: bool, every_s: float = REPEAT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.n = n
        self.passed = n <= 0 or resumed
        if n > 0 and resumed:
            log.info("--wait-for-actors %d: not waiting, the run is resumed", n)
        self.every_s = every_s
        self._clock = clock
        self._start = clock()
        self._next = self._start

    def open(self, accepted: int) -> bool:
        if self.passed:
            return True
        now = self._clock()
        if accepted >= self.n:
            self.passed = True
            log.info("%d actors said hello (after %.0f s): the run starts", accepted,
                     now - self._start)
        elif now >= self._next:
            log.info("waiting for %d actors before the first policy (--wait-for-actors): %d said "
                     "hello", self.n, accepted)
            self._next = now + self.every_s
        return self.passed
