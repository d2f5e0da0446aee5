"""Supervisor: a SIGKILLed actor is restarted on new seeds, crash loops back off (given up only
with --max-restarts), and SIGINT / SIGTERM / SIGKILL of the supervisor leave no process behind."""
from __future__ import annotations

import logging
import operator
import os
import signal
import sys
import time

import pytest

from actors.supervisor import STAT_FIELDS, Supervisor
from fpac_async.wire import protocol as P
from fpac_async.config import EnvConfig, RunConfig, resolve
from fault_service import alive
from test_actor_service import FakeLearner, start_actors, steps_of


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (children, their children...)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def wait_gone(pids: set[int], timeout_s: float = 15.0) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return {p for p in pids if alive(p)}


def hello_pids(learner: FakeLearner, actor: int) -> list[int]:
    pids: list[int] = []
    for m in learner.messages[P.HELLO]:
        if m.actor == actor and m.meta["pid"] not in pids:
            pids.append(m.meta["pid"])
    return pids


@pytest.fixture
def learner():
    fake = FakeLearner()
    yield fake
    fake.close()


def test_killed_actor_is_restarted_on_new_seeds_and_sigint_leaves_no_process(learner):
    sup = start_actors(learner, n=1, offset=1)
    try:
        learner.pump(lambda f: steps_of(f, 1) >= 20, timeout_s=40)
        [victim] = hello_pids(learner, 1)
        assert victim in descendants(sup.pid)
        os.kill(victim, signal.SIGKILL)
        learner.pump(lambda f: len(hello_pids(f, 1)) == 2, timeout_s=40)
        learner.pump(lambda f: sum(m.meta["step0"] == 0 for m in f.records(1)[0]) == 2,
                     timeout_s=40)
        procs = descendants(sup.pid)
        assert hello_pids(learner, 1)[1] in procs and victim not in procs
        sup.send_signal(signal.SIGINT)
        sup.communicate(timeout=20)
    finally:
        if sup.poll() is None:
            sup.kill()
    assert sup.returncode == 0
    assert wait_gone(procs | {victim}) == set()
    # The restarted actor began a new stream (step0 = 0, FIRST) from a different seed.
    restarts = [m for m in learner.records(1)[0] if m.meta["step0"] == 0]
    assert [m.arrays["flags"][0] for m in restarts] == [P.FIRST, P.FIRST]
    assert (restarts[0].arrays["obs"][0] != restarts[1].arrays["obs"][0]).any()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_sigterm_or_sigkill_of_the_supervisor_leaves_no_process(learner, sig):
    sup = start_actors(learner, n=1)
    try:
        learner.pump(lambda f: steps_of(f, 0) >= 10, timeout_s=40)
        procs = descendants(sup.pid)
        assert hello_pids(learner, 0)[0] in procs
        sup.send_signal(sig)  # SIGKILL: the children's PR_SET_PDEATHSIG takes them down
        sup.communicate(timeout=20)
    finally:
        if sup.poll() is None:
            sup.kill()
    assert sup.returncode == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    assert wait_gone(procs) == set()


def test_a_crash_looping_slot_backs_off_instead_of_being_given_up(caplog):
    env = resolve(RunConfig(env=EnvConfig(task="point_reach"))).env
    # operator.truediv(spec, stats) raises TypeError at once: a child that always crashes.
    sup = Supervisor(1, env, "127.0.0.1:1", restart_backoff_s=0.2, restart_backoff_max_s=0.8,
                     target=operator.truediv)
    starts: list[float] = []
    spawn = sup._spawn
    sup._spawn = lambda slot: (starts.append(time.monotonic()), spawn(slot))
    with caplog.at_level(logging.WARNING, logger="actors.supervisor"):
        sup.start()
        deadline = time.monotonic() + 60
        try:
            while sup.slots[0].restarts < 5:
                assert time.monotonic() < deadline, "fewer than 5 restarts within 60 s"
                time.sleep(0.02)
                sup.poll()
        finally:
            sup.shutdown()
    assert sup.slots[0].state != "failed"  # the old policy gave up after 5 restarts in 60 s
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    # Each restart waits at least its back-off: 0.2, 0.4, 0.8, then capped at 0.8 s.
    for gap, delay in zip(gaps, [0.2, 0.4, 0.8, 0.8, 0.8]):
        assert gap >= delay, (gaps, delay)
    assert "(crash 3 in a row); restarting in 0.8 s (back-off 0.2 s doubling to 0.8 s" in caplog.text


def _end_of_run_target(spec, stats) -> None:
    """Slot 0 hears the learner's stop (exit 0); slot 1 never does (it started after the stop);
    slot 2 crashes at once (its restart would come after the end)."""
    if spec.slot == 0:
        time.sleep(1.0)
        sys.exit(0)
    if spec.slot == 1:
        time.sleep(3600)
    raise RuntimeError("crash")


def test_after_the_learner_ends_the_run_nothing_restarts_and_stragglers_are_stopped(caplog):
    """The run ended (a child exited 0): a slot in back-off is not restarted, and a child still
    running after the grace period (one restarted after the learner's one-off stop) is stopped,
    so fpac-actors exits 0 instead of waiting forever (seen in the actor-kill fault test)."""
    env = resolve(RunConfig(env=EnvConfig(task="point_reach"))).env
    sup = Supervisor(3, env, "127.0.0.1:1", restart_backoff_s=5.0, run_end_grace_s=1.0,
                     target=_end_of_run_target)
    with caplog.at_level(logging.INFO, logger="actors.supervisor"):
        sup.start()
        deadline = time.monotonic() + 60
        try:
            while any(s.state in ("running", "backoff") for s in sup.slots):
                assert time.monotonic() < deadline, [s.state for s in sup.slots]
                time.sleep(0.05)
                sup.poll()
        finally:
            sup.shutdown()
    assert [s.state for s in sup.slots] == ["done", "done", "done"]
    assert sup.slots[2].restarts == 0  # its back-off (5 s) was cut by the end of the run
    assert "actor 2: not restarted: the learner ended the run" in caplog.text
    assert "actor 1: still running 1 s after the learner ended the run" in caplog.text
    assert not sup.slots[1].process.is_alive()


def test_max_restarts_gives_a_crash_looping_slot_up(caplog):
    env = resolve(RunConfig(env=EnvConfig(task="point_reach"))).env
    sup = Supervisor(1, env, "127.0.0.1:1", max_restarts=2, restart_backoff_s=0.05,
                     target=operator.truediv)
    with caplog.at_level(logging.ERROR, logger="actors.supervisor"):
        code = sup.run(poll_s=0.05)
    assert code == 1
    assert sup.slots[0].state == "failed" and sup.slots[0].restarts == 2
    assert "(crash 3 in a row, --max-restarts 2); giving up on this slot" in caplog.text
    assert len(sup.stats) == len(STAT_FIELDS)


def test_render_threads_share_the_cores_out():
    from actors.supervisor import render_threads_per_actor
    assert render_threads_per_actor(1, cores=2) == 2
    assert render_threads_per_actor(2, cores=2) == 1
    assert render_threads_per_actor(32, cores=16) == 1
    assert render_threads_per_actor(3, cores=16) == 5
