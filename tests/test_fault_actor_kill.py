"""Fault injection on the running service: kill -9 of an actor process mid-run.

The supervisor restarts it (after its 1 s back-off), the learner sees a new process (a new pid
in its hello) whose streams start over, no record is taken twice (the stream ledger's
stream_records_repeated stays 0), and the run reaches its budget and ends with exit 0
everywhere. Real processes on loopback, CPU, tiny point_reach agent."""
from __future__ import annotations

import os
import signal
import time

BUDGET = 3000  # env steps (point_reach: action repeat 1); far beyond the kill at >= 200


def test_a_killed_actor_is_restarted_and_the_run_reaches_its_budget(service):
    learner = service.start_learner(["--env-steps", str(BUDGET)])
    actors = service.start_actors(2)
    # Both actors must have been HEARD (a row counting 2 actors: each said hello, so the learner
    # holds both pids), not merely started: under load actor 0 can be killed before its first
    # hello, and then its successor is a first process to the learner, not a new one.
    service.wait_for(lambda: service.last("env_steps") >= 200
                     and any(r.get("actors", 0) >= 2 for r in service.rows()),
                     "200 env steps and both actors heard by the learner", alive=(learner, actors))
    victim, other = service.pid_of("actor0"), service.pid_of("actor1")
    # Both actors are frozen before the step count is read: a metrics row read while they run
    # can be a second old, and the budget could be reached before the kill. The count comes
    # from a row written after the freeze (plus what their queues still held). Actor 1 stays
    # paused until actor 0's successor has said hello, so the run cannot end before the restart.
    os.kill(other, signal.SIGSTOP)
    os.kill(victim, signal.SIGSTOP)
    frozen_at = time.time() + 1.0  # a row from a second later: what was queued is mostly taken
    try:
        service.wait_for(lambda: any(r["time"] > frozen_at for r in service.rows()),
                         "a metrics row written after the freeze", alive=(learner, actors))
        steps_at_kill = next(r for r in service.rows() if r["time"] > frozen_at)["env_steps"]
        assert steps_at_kill < BUDGET, f"the budget was reached before the kill ({steps_at_kill})"
        os.kill(victim, signal.SIGKILL)  # a stopped process dies at once
        service.wait_for(lambda: (service.pid_of("actor0") or victim) != victim,
                         "the supervisor to restart actor 0", timeout_s=60,
                         alive=(learner, actors))
        service.wait_for(lambda: "is a new process" in service.text(service.learner_log(1)),
                         "the learner to hear actor 0's new process", timeout_s=120,
                         alive=(learner, actors))
    finally:
        for pid in (other, victim):  # the victim too, if the test failed before killing it
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    log = service.text(service.actors_log())
    assert f"actor 0: exited with code -{int(signal.SIGKILL)} after running" in log
    assert "restarting in 1 s (back-off 1 s doubling to 60 s" in log
    assert service.wait_exit(learner, "the learner") == 0, service.report()
    assert service.wait_exit(actors, "fpac-actors") == 0, service.report()
    final = service.rows()[-1]
    assert any(r.get("eval_final") for r in service.rows())  # the final evaluation is recorded
    assert final["env_steps"] >= BUDGET > steps_at_kill
    # The learner saw actor 0's new process (its streams start over at record 0) and took no
    # record twice (a repeat would be counted in stream_records_repeated).
    assert final["stream_restarts"] == 1, service.report()
    assert final["stream_records_repeated"] == 0 and final["stream_records_missing"] == 0
    assert final["stream_records"] >= BUDGET
    # Only actor 0 was restarted: actor 1 and the evaluator kept their first process.
    names = [name for name, _ in service.started()]
    assert sorted(names) == ["actor0", "actor0", "actor1", "evaluator0"], names
    assert "is a new process" in service.text(service.learner_log(1))
