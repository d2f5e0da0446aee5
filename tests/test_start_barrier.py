"""`--wait-for-actors N` (learner.waiting.StartBarrier): a new run's first policy waits for N
accepted hellos, so no actor starts stepping before the last one has said hello; a resumed run
never waits. The barrier against a fake clock, then a real learner on loopback with two scripted
actors (tests/test_learner_service.py's FakeActor).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Iterator

import pytest
import zmq

from fpac_async.wire import protocol as P
from fpac_async.wire.transport import free_port_pair
from learner.service import LearnerService
from learner.waiting import StartBarrier
from test_learner_service import FakeActor, start, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_the_barrier_opens_at_n_hellos_stays_open_and_says_whom_it_waits_for(caplog) -> None:
    clock = Clock()
    caplog.set_level(logging.INFO, logger="learner.waiting")
    barrier = StartBarrier(3, resumed=False, every_s=30.0, clock=clock)
    assert not barrier.open(0)
    assert not barrier.open(2)
    clock.t += 29.0
    assert not barrier.open(2)
    clock.t += 1.0
    assert not barrier.open(2)
    waits = [r.getMessage() for r in caplog.records if "waiting for 3 actors" in r.getMessage()]
    assert len(waits) == 2 and waits[-1].endswith("2 said hello"), waits  # at once, then at 30 s
    assert barrier.open(3)
    assert barrier.open(0)  # passed once: a refused or replaced actor does not close it again
    assert any("3 actors said hello (after 30 s)" in r.getMessage() for r in caplog.records)


def test_a_resumed_run_or_no_count_never_waits() -> None:
    assert StartBarrier(4, resumed=True).open(0)
    assert StartBarrier(0, resumed=False).open(0)


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def test_the_learner_gives_no_policy_until_the_second_actor_says_hello(tmp_path, ctx) -> None:
    run_dir, port = str(tmp_path / "run"), free_port_pair()
    cfg = tiny_config(run_dir, port, env_steps=10_000)
    cfg = dataclasses.replace(cfg, learner=dataclasses.replace(cfg.learner, wait_for_actors=2))
    service = LearnerService(cfg, tensorboard=False, console=False)
    thread, code = start(service)
    first, second = FakeActor(ctx, port, actor=1), FakeActor(ctx, port, actor=2)
    try:
        hello = P.hello_message(1, "point_reach", 1, (3, 32, 32), 2, role=P.ACTOR,
                                settings=first.settings)
        deadline = time.monotonic() + 20
        while len(service.receiver.accepted) < 1:  # the learner has taken actor 1's hello
            assert time.monotonic() < deadline and not code, "actor 1's hello was not accepted"
            first.send(hello)
            first.drain(wait_ms=100)
        for _ in range(5):  # more hellos: still no policy (without the barrier: one per hello)
            first.send(hello)
            first.drain(wait_ms=200)
        assert not [m for m in first.received if m.kind == P.POLICY]
        assert service.receiver.agent_steps == 0
        second.hello_until_policy()  # the second hello opens it: both get the policy
        deadline = time.monotonic() + 20
        while not [m for m in first.received if m.kind == P.POLICY]:
            assert time.monotonic() < deadline, "actor 1 got no policy once actor 2 said hello"
            first.drain(wait_ms=100)
        assert service.barrier.passed and sorted(service.receiver.accepted) == [1, 2]
    finally:
        service.request_stop()
        thread.join(20)
    assert not thread.is_alive()
