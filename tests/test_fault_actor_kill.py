"""Fault injection on the running service: kill -9 of an actor process mid-run.

The supervisor restarts it (after its 1 s back-off), the learner sees a new process (a new pid
in its hello) whose streams start over, no record is taken twice (the stream ledger's
stream_records_repeated stays 0), and the run reaches its budget and ends with exit 0
everywhere. Real processes on loopback, CPU, tiny point_reach agent."""
from __future__ import annotations

import os
import signal



BUDGET = 1000  # env steps (point_reach: action repeat 1)


def test_a_killed_actor_is_restarted_and_the_run_reaches_its_budget(service):
    learner = service.start_learner(["--env-steps", str(BUDGET)])
    actors = service.start_actors(2)
    service.wait_for(lambda: service.last("env_steps") >= 200 and service.pid_of("actor0"),
                     "200 env steps and actor 0 running", alive=(learner, actors))
    victim, other = service.pid_of("actor0"), service.pid_of("actor1")
    # Actor 1 is paused until actor 0's successor has said hello, so the run cannot reach its
    # budget before the restart (on a fast machine the 800 remaining steps take about a second).
    os.kill(other, signal.SIGSTOP)
    try:
        steps_at_kill = service.last("env_steps")
        os.kill(victim, signal.SIGKILL)
        service.wait_for(lambda: (service.pid_of("actor0") or victim) != victim,
                         "the supervisor to restart actor 0", timeout_s=60,
                         alive=(learner, actors))
        service.wait_for(lambda: "is a new process" in service.text(service.learner_log(1)),
                         "the learner to hear actor 0's new process", timeout_s=120,
                         alive=(learner, actors))
    finally:
        os.kill(other, signal.SIGCONT)
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
