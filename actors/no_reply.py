"""Saying so when the learner never answers (issue 20, "Silent waits").

An actor or evaluator waits for the learner's policy before it does anything. Pointed at an
address where nothing answers (no learner, another port, a firewall) or at a learner with other
`--auth` keys (the CURVE handshake fails and nothing is delivered), it used to wait in silence.
`NoReplyWarner.poll()`, called while waiting, logs after `first_s` (30 s by default) that there
has been no reply from HOST:PORT, with the likely causes, and again every `every_s` (5 min).
One process per machine warns (the supervisor's first slot), so 32 actors print one line.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Callable

log = logging.getLogger(__name__)

FIRST_WARNING_S = 30.0
REPEAT_WARNING_S = 300.0


class NoReplyWarner:
    """Logs 'no reply from ADDRESS' at first_s, then every every_s, until the caller stops
    polling (a policy arrived). first_s = inf: never."""

    def __init__(self, who: str, address: str, first_s: float = FIRST_WARNING_S,
                 every_s: float = REPEAT_WARNING_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.who = who
        self.address = address.split("://", 1)[-1]
        self.every_s = every_s
        self._clock = clock
        self._start = clock()
        self._next = self._start + first_s
        self.warnings = 0

    def poll(self) -> bool:
        """Log the warning if it is due; True if it logged."""
        now = self._clock()
        if math.isinf(self._next) or now < self._next:
            return False
        waited = now - self._start
        log.warning("%s: no reply from the learner at %s after %.0f s. Likely: no learner is "
                    "running there (start fpac-learner first), it listens on another address or "
                    "port (its --bind; PORT, PORT+1 and PORT+2 must be reachable), or its "
                    "--auth keys differ from ours (--auth DIR --auth-key NAME). Still trying; "
                    "this repeats every %.0f s.", self.who, self.address, waited, self.every_s)
        self._next = now + self.every_s
        self.warnings += 1
        return True
