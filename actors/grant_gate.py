"""The learner's grants as an actor keeps them (actor pacing, learner/pacing.py, issue 19).

A `grant` names, per actor, the stream index its env streams may run to. The actor steps while
its next record index is below it; at the grant it flushes its partial chunk (the learner needs
those records to move on) and waits on the SUB socket for a grant that lets it on, or a stop.
Waits are normal and can be long: the records in flight (about `--actor-lead` updates' worth)
turn over at the learner's update rate (estimated 6 s for 200 updates' worth at 35 updates/s,
8 actors on 2 cores). A grant that does not name this actor (the learner has not read from it
lately) leaves its grant as it was; only an actor never named, or one from another learner
process, steps unpaced. An actor that no grant has named for GRANT_WAIT_S (the learner re-sends
them every second) steps unpaced until one does, so a lost learner never holds it for good (the
bounded queues still do).

Grants trail each weights broadcast on the same PUB socket, so a grant of a newer policy version
than the actor holds means the weights were dropped: the actor then asks for the policy with a
hello, at most once per RESYNC_EVERY_S.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np

from fpac_async.wire import protocol as P

GRANT_WAIT_S = 30.0  # named by no grant this long: unpaced until one names the actor again
RESYNC_EVERY_S = 5.0  # at most one hello per this many seconds for weights a grant shows missed


class GrantGate:
    """How far this actor may run (`upto`, None: unpaced); a pure object the actor loop drives."""

    def __init__(self, actor_id: int) -> None:
        self.actor_id = actor_id
        self.upto: int | None = None
        self.named_at = -math.inf  # when a grant last named this actor
        self._resynced_at = -math.inf

    def on_grant(self, msg: P.Message, held_version: int | None, now: float) -> bool:
        """Take a grant; True if it shows weights this actor missed (a hello is owed).
        held_version: the version of the policy held, None before any."""
        mine = np.flatnonzero(msg.arrays["actors"] == self.actor_id)
        if mine.size:
            self.upto, self.named_at = int(msg.arrays["upto"][mine[0]]), now
        if held_version is None or msg.version <= held_version \
                or now - self._resynced_at <= RESYNC_EVERY_S:
            return False
        self._resynced_at = now
        return True

    def holds(self, next_index: int) -> bool:
        return self.upto is not None and next_index >= self.upto

    def wait(self, next_index: Callable[[], int], receive: Callable[[int], None],
             stopped: Callable[[], bool]) -> float:
        """Wait at the grant (handling broadcasts 50 ms at a time) until a new grant lets
        next_index() on or stopped(), or until no grant has named the actor for GRANT_WAIT_S
        (then unpaced); the seconds waited."""
        start = time.monotonic()
        while self.holds(next_index()) and not stopped():
            if time.monotonic() - self.named_at > GRANT_WAIT_S:
                self.upto = None
                break
            receive(50)
        return time.monotonic() - start
