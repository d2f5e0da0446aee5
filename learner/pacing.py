"""Actor-side pacing (`--actor-lead U`, issue 19): grants that keep the actors about U updates'
worth of records (plus the ratio's slack) ahead of the learner, whatever their number.

Without it the actors are held only by full queues: while the replay ratio throttles, records
wait in each actor's send queue and the learner's receive queue, so N actors hold N queues of
records acted by old weights, and the policy lag in updates grows with N (measured with 1 / 4
actors, SAC-state cartpole: lag p95 443 / 704 updates, `bench_learning.py --preset lag-ratio`).

With it the learner tells each actor how far its env streams may run (`grant`: actor ids and
stream indices; docs/INTERFACES.md). The agent steps the replay ratio admits by U updates from
now, less those already taken, are split evenly over the envs of the actors read from in the last
KEEP_NAMING_S (an actor waiting at its grant sends nothing; a dead one's share is freed after it);
actor a may run its streams to (the furthest record of a's streams taken) + (that share). An
actor that reaches its grant flushes its partial chunk and waits for the next
(actors/grant_gate.py). At most about (U + slack) / ratio agent steps (plus one record per env)
are then in flight, however many actors share them, so the lag stays flat in the actor count:
about U + weights_every updates where the learner is the bottleneck. The default U = 50 came
from two unrecorded 8-actor debug runs (U = 50 against 200: about half the lag at the same env
steps/s); the recorded figures are the lag-actors rows of bench/results/learning.jsonl (U = 200
at b9f74b1 and 2007205, U = 50 at e535eb3).

Grants go out after each weights broadcast, once the learner has run `lead // 4` updates since
the last grant (new room for the actors), and at least every `resend_s` (PUB is lossy, a dead
actor's share is re-split at the next one, and an actor named by no grant for a while steps
unpaced), the random phase included (it grants the rest of the phase and the lead at once). They
are not sent for every chunk taken: a flood of grants can push the weights out of a slow
actor's bounded SUB queue (PUB drops the newest message at the high-water mark). None go out
while a resume refills the replay (it admits everything) or after the budget (the receiver
holds the actors). An actor never named by a grant (new to this learner process: not yet read
from) is not paced until it is; one left out of a grant keeps its last grant; one that no grant
has named for `actors.grant_gate.GRANT_WAIT_S` steps unpaced until one does, so a lost learner
never holds it for good (the bounded queues still do). That wait is long on purpose: a paced
actor's wait at its grant is normally the time the records in flight take to turn over at the
learner's update rate (estimated 6 s for 200 updates' worth at 35 updates/s); at b9f74b1 a 5 s
fallback counted from the start of each wait let those actors step unpaced, and their lag p95
was 980 updates against 190-199 for 1-4 actors (`bench_learning.py --preset lag-actors`).
"""
from __future__ import annotations

import math
import time
from typing import Any


KEEP_NAMING_S = 30.0  # actors read from this recently are named (actors/grant_gate.GRANT_WAIT_S)


class Pacer:
    """Grant arithmetic and timing: a pure object (the service publishes what it returns)."""

    def __init__(self, lead_updates: int, every_s: float = 0.05, resend_s: float = 1.0) -> None:
        if lead_updates < 0:
            raise ValueError(f"lead_updates must be >= 0 (0: no pacing); got {lead_updates}")
        self.lead = int(lead_updates)
        self.every_s, self.resend_s = float(every_s), float(resend_s)
        self.quantum = max(1, self.lead // 4)  # updates that make a new grant worth sending
        self.sent_at = self.checked_at = -math.inf
        self.sent, self.sent_updates = 0, -math.inf

    @property
    def on(self) -> bool:
        return self.lead > 0

    def due(self, now: float) -> bool:
        """Whether to look at the grants again now: every `every_s`."""
        return self.on and now - self.checked_at >= self.every_s

    def worth_sending(self, actors: list[int], updates: int, now: float, fresh: bool) -> bool:
        """A grant goes out when it is `fresh` (new weights went out just before it), when the
        learner ran `quantum` updates since the last one, or `resend_s` after it (a lost one is
        replaced); records it as sent if so."""
        self.checked_at = now
        if not actors or not (fresh or updates - self.sent_updates >= self.quantum
                              or now - self.sent_at >= self.resend_s):
            return False
        self.sent_at, self.sent, self.sent_updates = now, self.sent + 1, updates
        return True

    def grants(self, positions: dict[int, tuple[int, int]], admissible: int | None,
               agent_steps: int) -> tuple[list[int], list[int]]:
        """(actor ids, stream indices they may run to). positions: actor -> (its streams'
        furthest record taken, its number of streams), for the actors to pace; admissible: the
        agent steps the replay ratio admits at `lead` updates from now (None: no ratio, no
        pacing); agent_steps: those taken so far."""
        if not self.on or admissible is None or not positions:
            return [], []
        envs = sum(n for _, n in positions.values())
        share = -(-max(0, admissible - int(agent_steps)) // max(1, envs))  # records per stream
        actors = sorted(positions)
        return actors, [positions[a][0] + share for a in actors]

    def publish(self, receiver: Any, trainer: Any, broadcaster: Any, version: int,
                fresh: bool = False) -> None:
        """Grant the actors heard from recently what `lead` updates from now admits (none while
        a resume refills the replay, or after the budget); `fresh`: right after a broadcast."""
        if not self.on or trainer.refilling or receiver.budget_reached.is_set():
            return
        live = receiver.actors(window_s=KEEP_NAMING_S)  # waiting actors send nothing
        positions = {a: p for a, p in receiver.ledger.positions().items() if a in live}
        actors, upto = self.grants(positions, trainer.ratio.admissible(trainer.updates + self.lead),
                                   receiver.agent_steps)
        if self.worth_sending(actors, trainer.updates, time.monotonic(), fresh):
            broadcaster.publish_grant(version, actors, upto)
