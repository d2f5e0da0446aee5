"""The evaluation schedule (learner/evaluation.py), pure bookkeeping on an injected clock: when a
request is due, who gets it, when it is re-issued or re-published, what is recorded, and where a
resumed run's schedule picks up."""
from __future__ import annotations

from learner.evaluation import REPUBLISH_S, EvalSchedule


def test_eval_schedule_heartbeats_reissue_and_final() -> None:
    now = [0.0]
    ev = EvalSchedule(every_env_steps=100, episodes=3, timeout_s=50.0, clock=lambda: now[0],
                      heartbeat_timeout_s=10.0)
    assert ev.poll(99, 0) is None
    assert ev.poll(250, 4) is None  # due (one request stands for 100 and 200), nobody to ask
    ev.on_heartbeat(1)
    ev.on_heartbeat(2)
    first = ev.poll(260, 5)
    assert first is not None and first.target == 1 and (first.env_steps, first.version) == (250, 4)
    assert ev.next_at == 300
    # A busy evaluator that keeps beating is never re-issued, however long the episodes take:
    # well past the 50 s timeout, its heartbeats on the request count as progress.
    for t in (5.0, 15.0, 30.0, 45.0, 60.0, 75.0, 90.0, 105.0):
        now[0] = t
        ev.on_heartbeat(1, busy=True, eval_id=first.eval_id, episodes_done=1)
        ev.on_heartbeat(2)
        assert ev.poll(270, 5) is None, t
        assert ev.last_progress == t
    # Its heartbeats stop: re-issued (new id) to the other evaluator.
    now[0] = 116.0
    ev.on_heartbeat(2)
    second = ev.poll(270, 5)
    assert second is not None and second.target == 2 and second.eval_id != first.eval_id
    assert (second.env_steps, second.version) == (250, 4)
    # The request was lost (PUB): its idle target still beats -> the SAME request again.
    now[0] = 116.0 + REPUBLISH_S + 1
    ev.on_heartbeat(2)
    assert ev.poll(270, 5) is second
    assert ev.on_result(1, first.eval_id, [5.0], [10], 4, lambda v: None) is None  # late: ignored
    # Recorded at the env steps of the version evaluated, not at the request's.
    record = ev.on_result(2, second.eval_id, [1.0, 2.0, 6.0], [10, 10, 10], 3,
                          {3: 180, 4: 250}.get, wall_s=20.0)
    assert record is not None and (record.env_steps, record.version) == (180, 3)
    assert record.mean_return == 3.0 and ev.last_mean == 3.0
    assert ev.timeout == 60.0  # max(timeout_s, 3 x the longest evaluation seen)
    # Final: issued to a live idle evaluator, recorded, then nothing more.
    ev.request_final(400, 9)
    ev.on_heartbeat(4)
    final = ev.poll(400, 9)
    assert final is not None and final.final and final.version == 9
    assert ev.on_result(final.target, final.eval_id, [0.0], [10], 9, {9: 400}.get) is not None
    assert ev.final_done and ev.poll(500, 10) is None
    assert [r.env_steps for r in ev.history] == [180, 400]


def test_eval_schedule_times_out_a_stuck_request_and_final_waits_for_periodic() -> None:
    now = [0.0]
    ev = EvalSchedule(every_env_steps=100, episodes=2, timeout_s=30.0, clock=lambda: now[0])
    ev.on_heartbeat(1)
    periodic = ev.poll(100, 1)
    assert periodic is not None and not periodic.final
    ev.request_final(200, 2)
    now[0] = 10.0
    ev.on_heartbeat(1, busy=True, eval_id=periodic.eval_id)
    assert ev.poll(200, 2) is None  # the final waits for the periodic one still running
    assert ev.last_progress == 10.0
    assert ev.on_result(1, periodic.eval_id, [1.0], [5], 1, {1: 100}.get) is not None
    final = ev.poll(200, 2)
    assert final is not None and final.final
    # Alive but stuck on something else for longer than the timeout, and no other evaluator:
    # the SAME request is published again (a new id would discard episodes already run).
    for t in (20.0, 35.0):
        now[0] = t
        ev.on_heartbeat(1, busy=True, eval_id=12345)
        assert ev.poll(200, 2) is None
    now[0] = 41.0  # 31 s without progress
    ev.on_heartbeat(1, busy=True, eval_id=12345)
    assert ev.poll(200, 2) is final  # the same id, asked again
    now[0] = 60.0
    ev.on_heartbeat(1, busy=True, eval_id=12345)
    assert ev.poll(200, 2) is None  # the clock restarted at 41 s
    now[0] = 72.0
    ev.on_heartbeat(1, busy=True, eval_id=12345)
    assert ev.poll(200, 2) is final
    # With a second evaluator alive, a stuck request moves to it under a new id.
    now[0] = 103.0
    ev.on_heartbeat(1, busy=True, eval_id=12345)
    ev.on_heartbeat(2)
    moved = ev.poll(200, 2)
    assert moved is not None and moved.target == 2 and moved.eval_id != final.eval_id
    assert moved.final and moved.version == 2


def test_a_resumed_schedule_goes_on_from_start_env_steps() -> None:
    """A learner resumed at 250 env steps evaluates next at 300: not at once for the points
    before the checkpoint (100, 200), and never at a point it already passed."""
    now = [0.0]
    ev = EvalSchedule(every_env_steps=100, episodes=2, timeout_s=30.0, start_env_steps=250,
                      clock=lambda: now[0])
    assert ev.next_at == 300
    ev.on_heartbeat(1)  # an idle evaluator: anything due would be issued now
    assert ev.poll(250, 7) is None and ev.poll(299, 7) is None
    request = ev.poll(300, 8)
    assert request is not None and (request.env_steps, request.version) == (300, 8)
    assert ev.next_at == 400
    # Resumed right on a point of the period: the next one is the following point.
    assert EvalSchedule(100, 2, 30.0, start_env_steps=200).next_at == 300
