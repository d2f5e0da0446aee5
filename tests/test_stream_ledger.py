"""Stream positions at the learner (learner/stream_ledger.py): repeated records and gaps are
counted, and a restarted actor process (a new pid in its hello) starts its streams over."""
from __future__ import annotations

import numpy as np

from fpac_async.wire import protocol as P
from learner.receiver import Receiver, TaskShapes
from learner.stream_ledger import StreamLedger


def test_contiguous_gapped_and_repeated_chunks():
    led = StreamLedger()
    led.take(1, 0, 0, 4)
    led.take(1, 0, 4, 4)
    led.take(1, 1, 0, 4)  # another env: its own stream
    led.take(1, 0, 10, 4)  # records 8 and 9 never arrived
    assert (led.counts.gaps, led.counts.records_missing, led.counts.records) == (1, 2, 16)
    assert led.counts.repeats == 0
    led.take(1, 0, 12, 4)  # overlaps 12, 13 of the last chunk
    led.take(1, 0, 0, 4)
    assert (led.counts.repeats, led.counts.records_repeated) == (2, 6)
    assert led.expected[(1, 0)] == 4 and led.counts.chunks == 6


def test_a_new_pid_starts_the_actors_streams_over_and_the_same_pid_does_not():
    led = StreamLedger()
    led.on_hello(1, 100)
    led.take(1, 0, 0, 8)
    led.take(2, 0, 0, 8)
    assert led.on_hello(1, 100) is None  # the same process saying hello again (a new learner)
    led.take(1, 0, 0, 8)
    assert led.counts.records_repeated == 8
    assert led.on_hello(1, 200) == 100  # a restarted process: numbered from 0 again
    led.take(1, 0, 0, 8)
    assert led.counts.records_repeated == 8
    led.take(2, 0, 0, 8)  # actor 2 did not restart
    assert led.counts.records_repeated == 16
    assert led.counts.restarts == 1 and led.counts.gaps == 0


def test_the_receiver_counts_what_each_stream_did():
    added: list[int] = []
    r = Receiver(None, TaskShapes("point_reach", (3, 32, 32), 2, 4),
                 lambda **kw: added.append(kw["step0"]), lambda _: True, action_repeat=1,
                 env_step_budget=10**6, max_bytes=2**20)

    def steps(step0: int, n: int = 4) -> list[bytes]:
        return [bytes(f) for f in P.encode(P.steps_message(
            7, 0, step0 // n, step0, np.zeros((n, 3, 32, 32), np.uint8),
            np.zeros((n, 2), np.float32), np.zeros(n, np.float32), np.zeros(n, np.uint8),
            np.zeros(n, np.int32)))]

    def hello(pid: int) -> list[bytes]:
        return [bytes(f) for f in P.encode(P.hello_message(7, "point_reach", pid, (3, 32, 32), 2))]

    r.handle(hello(11))
    for frames in (steps(0), steps(4), steps(12)):
        r.handle(frames)
    r.handle(hello(12))  # the actor process was replaced: its stream starts at 0 again
    r.handle(steps(0))
    row = r.ledger.as_row()
    assert added == [0, 4, 12, 0] and r.agent_steps == 16
    assert row["stream_records_missing"] == 4  # records 8..11
    assert row["stream_restarts"] == 1 and row["stream_records_repeated"] == 0
    r.handle(steps(0))  # the same process sending chunk 0 again
    assert r.ledger.as_row()["stream_records_repeated"] == 4
