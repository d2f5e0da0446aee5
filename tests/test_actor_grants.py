"""An ActorLoop paced by the learner's grants (learner/pacing.py, actors/actor_loop.py), against the
fake learner on loopback: it stops exactly at its grant with every record sent (the partial
chunk flushed), resumes at the next grant, is not paced by a grant for other actors, drops a
learner process's grants when a new one broadcasts, and stops pacing after GRANT_WAIT_S without one."""
from __future__ import annotations

import pytest

import actors.actor_loop as actor_loop
from fpac_async.wire import protocol as P
from test_actor_loop import _run_actor
from test_actor_service import FakeLearner

ACTOR = 5  # _run_actor's actor id: 2 envs, 8 records per message


class GrantingLearner(FakeLearner):
    """Answers each hello with a grant for the actor and then the policy (in that order on PUB,
    so the grant holds before the actor's first step)."""

    def __init__(self, first: list[int], actors: list[int] | None = None) -> None:
        super().__init__(random=True)
        self.first, self.grant_actors = first, [ACTOR] if actors is None else actors

    def publish_policy(self) -> None:
        self.grant(self.first, self.grant_actors)
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
        learner.grant([200], [2])  # another actor's only: this one is no longer paced
        learner.pump(lambda f: min(ends(f).values()) >= 60)
        learner.grant([70], [ACTOR])  # it stops at 70, or at once if it is past 70 already
        learner.drain(quiet_ms=300)
        stopped = ends(learner)
        learner.drain(quiet_ms=300)
        assert ends(learner) == stopped and stopped[0] == stopped[1] >= 70
        learner.grant([stopped[0] + 9], [ACTOR])
        learner.pump(lambda f: ends(f) == {0: stopped[0] + 9, 1: stopped[0] + 9})
        learner.drain(quiet_ms=300)
        assert ends(learner) == {0: stopped[0] + 9, 1: stopped[0] + 9}
        waits = [m.meta["perf"]["grant_wait_s"] for m in learner.messages[P.STATS]]
        assert sum(waits) > 0.3  # the stats say where the time went
    finally:
        finish(learner, thread, result)


def test_an_actor_left_without_a_grant_stops_pacing_after_the_wait(monkeypatch) -> None:
    monkeypatch.setattr(actor_loop, "GRANT_WAIT_S", 0.5)
    learner = GrantingLearner([10])
    try:
        thread, result = _run_actor(learner, steps=10**6)
        learner.pump(lambda f: min(ends(f).values(), default=0) >= 40, timeout_s=20)
        assert result["loop"]._upto is None
    finally:
        finish(learner, thread, result)


@pytest.mark.parametrize("run", [None, 3])
def test_a_grant_from_a_new_learner_process_is_dropped_with_that_learners_grants(
        run, monkeypatch) -> None:
    """A broadcast with another run id (a restarted learner) clears the old learner's grant."""
    monkeypatch.setattr(actor_loop, "GRANT_WAIT_S", 600.0)  # only the new run can release it
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
