"""An ActorLoop paced by the learner's grants (learner/pacing.py, actors/actor_loop.py), against the
fake learner on loopback: it stops exactly at its grant with every record sent (the partial
chunk flushed), resumes at the next grant, is not paced by a grant for other actors, drops a
learner process's grants when a new one broadcasts, stops pacing after GRANT_WAIT_S without one,
and asks for the policy when a grant shows weights it missed."""
from __future__ import annotations

import time

import numpy as np
import pytest

import actors.actor_loop as actor_loop
import actors.grant_gate as grant_gate
from actors.grant_gate import GrantGate
from fpac_async.wire import protocol as P
from test_actor_loop import _run_actor
from test_actor_service import FakeLearner

ACTOR = 5  # _run_actor's actor id: 2 envs, 8 records per message


class GrantingLearner(FakeLearner):
    """Answers the first hello with a grant for the actor and then the policy (in that order on
    PUB, so the grant holds before the actor's first step), later hellos with the policy."""

    def __init__(self, first: list[int], actors: list[int] | None = None) -> None:
        super().__init__(random=True)
        self.first, self.grant_actors = first, [ACTOR] if actors is None else actors

    def publish_policy(self) -> None:
        if self.first is not None:
            self.grant(self.first, self.grant_actors)
            self.first = None
        super().publish_policy()

    def grant(self, upto: list[int], actors: list[int], run: int | None = None) -> None:
        self.publish(P.grant_message(self.seq, self.version, actors, upto, run=run))


def finish(learner: FakeLearner, thread, result: dict) -> None:
    result["loop"]._stop = True
    try:
        learner.pump(lambda f: not thread.is_alive())  # reading: its last sends go through
    finally:
        learner.close()
        thread.join(10)


def ends(learner: FakeLearner) -> dict[int, int]:
    """Per env stream of the actor: the index after its last record received."""
    return {env: msgs[-1].meta["step0"] + len(msgs[-1].arrays["flags"])
            for env, msgs in learner.records(ACTOR).items()}


def test_an_actor_stops_at_its_grant_with_every_record_sent_and_resumes_at_the_next() -> None:
    learner = GrantingLearner([21])  # not a multiple of 8: the last chunk is a partial one
    try:
        thread, result = _run_actor(learner, steps=10**6)
        learner.pump(lambda f: ends(f) == {0: 21, 1: 21})
        learner.drain(quiet_ms=300)  # waiting at the grant: nothing more comes (stats aside)
        assert ends(learner) == {0: 21, 1: 21} and thread.is_alive()
        assert [len(m.arrays["flags"]) for m in learner.records(ACTOR)[0]] == [8, 8, 5]
        learner.grant([200], [2])  # another actor's only: this one keeps its grant
        learner.drain(quiet_ms=300)
        assert ends(learner) == {0: 21, 1: 21}
        learner.grant([70], [ACTOR])  # it runs on to 70 and stops there
        learner.pump(lambda f: ends(f) == {0: 70, 1: 70})
        learner.drain(quiet_ms=300)
        assert ends(learner) == {0: 70, 1: 70}
        stopped = ends(learner)
        learner.grant([stopped[0] + 9], [ACTOR])
        learner.pump(lambda f: ends(f) == {0: stopped[0] + 9, 1: stopped[0] + 9})
        learner.drain(quiet_ms=300)
        assert ends(learner) == {0: stopped[0] + 9, 1: stopped[0] + 9}
        waits = [m.meta["perf"]["grant_wait_s"] for m in learner.messages[P.STATS]]
        assert sum(waits) > 0.3  # the stats say where the time went
    finally:
        finish(learner, thread, result)


def test_an_actor_named_by_no_grant_stops_pacing_after_the_wait(monkeypatch) -> None:
    """Grants that leave the actor out do not keep it paced for good: after GRANT_WAIT_S with
    no grant naming it, it steps unpaced."""
    monkeypatch.setattr(grant_gate, "GRANT_WAIT_S", 1.0)
    learner = GrantingLearner([10])
    try:
        thread, result = _run_actor(learner, steps=10**6)
        learner.pump(lambda f: ends(f) == {0: 10, 1: 10})
        for _ in range(10):  # grants for others only, 0.2 s apart: not naming it
            learner.grant([99], [2])
            until = time.monotonic() + 0.2
            learner.pump(lambda f, t=until: time.monotonic() > t)  # (drain: never quiet)
        learner.pump(lambda f: min(ends(f).values(), default=0) >= 40, timeout_s=20)
        assert result["loop"].gate.upto is None
    finally:
        finish(learner, thread, result)


@pytest.mark.parametrize("run", [None, 3])
def test_a_grant_from_a_new_learner_process_is_dropped_with_that_learners_grants(
        run, monkeypatch) -> None:
    """A broadcast with another run id (a restarted learner) clears the old learner's grant."""
    monkeypatch.setattr(grant_gate, "GRANT_WAIT_S", 600.0)  # only the new run can release it
    learner = GrantingLearner([12])
    try:
        thread, result = _run_actor(learner, steps=10**6)
        learner.pump(lambda f: ends(f) == {0: 12, 1: 12})
        if run is None:
            learner.publish_weights(1)  # the same learner (no run id): still paced
            learner.drain(quiet_ms=300)
            assert ends(learner) == {0: 12, 1: 12}
        else:
            learner.publish(P.weights_message(learner.seq, 1, learner.flat, learner.layout,
                                              run=run))
            learner.pump(lambda f: min(ends(f).values()) >= 40)
    finally:
        finish(learner, thread, result)


def test_the_gate_keeps_its_own_grant_and_sees_missed_weights_at_most_every_resync_s() -> None:
    gate = GrantGate(actor_id=3)
    grant = P.grant_message(0, 7, actors=[1, 3], upto=[50, 80])
    assert not gate.on_grant(grant, held_version=7, now=0.0) and gate.upto == 80
    assert gate.holds(80) and not gate.holds(79)
    assert not gate.on_grant(P.grant_message(1, 7, [1], [9]), 7, 0.5)
    assert gate.upto == 80 and gate.named_at == 0.0  # left out: its grant stands
    assert not GrantGate(actor_id=4).holds(10**9)  # never named: not paced
    assert not gate.on_grant(grant, held_version=None, now=1.0)  # no policy yet: nothing missed
    assert gate.on_grant(grant, held_version=6, now=2.0)  # version 7 granted, 6 held: missed
    assert not gate.on_grant(grant, held_version=6, now=2.0 + grant_gate.RESYNC_EVERY_S)
    assert gate.on_grant(grant, held_version=6, now=2.1 + grant_gate.RESYNC_EVERY_S)


def test_an_actor_that_missed_weights_asks_for_the_policy_and_acts_with_it() -> None:
    """The weights of version 4 never reach the actor (as when PUB drops them at a full SUB
    queue); the next grant says version 4: the actor says hello, and the re-published policy
    (the fake learner answers each hello with it) brings the actor to version 4."""
    learner = GrantingLearner([10**6])
    try:
        thread, result = _run_actor(learner, steps=10**6)
        learner.pump(lambda f: len(f.messages[P.STEPS]) >= 2)
        hellos = len(learner.messages[P.HELLO])
        learner.version, learner.random = 4, False
        learner.flat = (learner.flat * np.float32(0.5)).astype(np.float32)  # unsent weights
        learner.grant([10**6], [ACTOR])
        learner.pump(lambda f: any((m.arrays["version"] == 4).any() for m in f.messages[P.STEPS]))
        assert len(learner.messages[P.HELLO]) > hellos
        assert result["loop"].policy.version == 4 and not result["loop"].policy.random
    finally:
        finish(learner, thread, result)


def test_a_long_wait_with_grants_naming_the_actor_stays_paced(monkeypatch) -> None:
    """A wait longer than GRANT_WAIT_S is normal (records in flight turn over at the learner's
    update rate): while grants keep naming the actor, it keeps waiting at its grant."""
    monkeypatch.setattr(grant_gate, "GRANT_WAIT_S", 1.0)
    learner = GrantingLearner([10])
    try:
        thread, result = _run_actor(learner, steps=10**6)
        learner.pump(lambda f: ends(f) == {0: 10, 1: 10})
        for _ in range(12):  # 2.4 s of the same grant, re-sent as the learner does
            learner.grant([10], [ACTOR])
            learner.drain(quiet_ms=200)
        assert ends(learner) == {0: 10, 1: 10} and result["loop"].gate.upto == 10
    finally:
        finish(learner, thread, result)


def test_an_actor_waiting_at_its_grant_says_hello_when_the_learner_is_silent(monkeypatch) -> None:
    """A restarted learner grants only actors it has heard from: an actor waiting at the old
    learner's grant with nothing heard for WAIT_SILENCE_S says hello (without stepping on)."""
    monkeypatch.setattr(actor_loop, "WAIT_SILENCE_S", 0.5)
    learner = GrantingLearner([10])
    try:
        thread, result = _run_actor(learner, steps=10**6)
        learner.pump(lambda f: ends(f) == {0: 10, 1: 10})
        hellos = len(learner.messages[P.HELLO])
        learner.pump(lambda f: len(f.messages[P.HELLO]) >= hellos + 2, timeout_s=20)
        assert ends(learner) == {0: 10, 1: 10}
    finally:
        finish(learner, thread, result)
