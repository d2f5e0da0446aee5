"""The lag bound's credit logic (learner/lag_bound.py) against hand-made streams: no sockets, no
clock (every call gets its `now`)."""
from __future__ import annotations

import numpy as np
import pytest

from learner.lag_bound import NO_LIMIT, LagBound, LagStats, PolicyVersionError


def v(*versions: int) -> np.ndarray:
    return np.array(versions, np.int32)


def test_lag_is_counted_in_updates_from_each_versions_broadcast() -> None:
    lag = LagBound()  # no bound: every record is taken, its lag measured
    lag.on_broadcast(1, 0)  # the random phase ends: version 1 at update 0
    lag.on_broadcast(2, 50)
    k, lags = lag.admit(0, v(1, 1, 2), updates=70, now=0.0)
    assert k == 0 and lags.tolist() == [70, 70, 20]
    assert lag.credit(10**6, 0.0) == NO_LIMIT


def test_a_stale_prefix_is_refused_and_the_fresh_rest_taken() -> None:
    lag = LagBound(max_lag=30)
    lag.on_broadcast(1, 0)
    lag.on_broadcast(2, 20)
    k, lags = lag.admit(3, v(1, 1, 2, 2), updates=40, now=0.0)
    assert k == 2 and lags.tolist() == [20, 20]  # version 1 is 40 updates old: refused
    assert lag.refused == 2
    # A stale record after fresh ones (not a real actor's order) refuses everything before it.
    k, _ = lag.admit(3, v(2, 1, 2), updates=40, now=0.0)
    assert k == 2 and lag.refused == 4


def test_versions_never_broadcast_are_hostile() -> None:
    lag = LagBound(max_lag=30)
    with pytest.raises(PolicyVersionError):
        lag.admit(0, v(0, 1), updates=0, now=0.0)  # version 1 was never broadcast
    with pytest.raises(PolicyVersionError):
        lag.admit(0, v(-1), updates=0, now=0.0)
    assert PolicyVersionError("x").reason == "policy_version"


def test_updates_wait_for_fresh_records_and_a_stale_one_is_never_taken() -> None:
    """The learner's loop in miniature: it runs every update its credit allows, an actor's stream
    arrives late; no record it takes is older than the bound, and it waits (credit 0, starved)
    until that actor's records show the newer weights."""
    bound, every = 10, LagBound(max_lag=10).weights_every(100)
    assert every == 5
    lag = LagBound(max_lag=bound)
    lag.on_broadcast(1, 0)
    lag.admit(0, v(1), updates=0, now=0.0)  # actor 0 acts with version 1
    lag.admit(1, v(1), updates=0, now=0.0)  # so does actor 1
    updates, version, taken = 0, 1, []
    for _ in range(3):  # the learner runs all it may; broadcasts every 5 updates
        credit = lag.credit(updates, now=1.0)
        for _ in range(min(credit, 100)):
            updates += 1
            if updates % every == 0:
                version += 1
                lag.on_broadcast(version, updates)
        assert lag.credit(updates, now=1.0) == 0 and lag.starved
        # Actor 1 catches up with the newest weights; actor 0 is still sending version-1 records.
        taken += lag.admit(1, v(version), updates, now=1.0)[1].tolist()
        assert lag.credit(updates, now=1.0) == 0  # still waiting on actor 0
        k, lags = lag.admit(0, v(version - 2, version - 1, version), updates, now=1.0)
        taken += lags.tolist()
        assert lag.credit(updates, now=1.0) > 0 and not lag.starved
        lag.admit(0, v(version), updates, now=1.0)
    assert max(taken) <= bound and lag.refused == 0


def test_an_actor_silent_while_the_learner_waits_is_no_longer_waited_on() -> None:
    lag = LagBound(max_lag=10, wait_s=5.0)
    lag.on_broadcast(1, 0)
    lag.admit(0, v(1), updates=0, now=0.0)
    assert lag.credit(10, now=1.0) == 0 and lag.starved  # waiting on actor 0 since t=1
    assert lag.credit(10, now=5.5) == 0  # 4.5 s: still waited on
    assert lag.credit(10, now=6.5) == NO_LIMIT and not lag.starved  # gone
    # Its records, if any come later, are checked like any: version 1 is 20 updates old.
    k, _ = lag.admit(0, v(1), updates=20, now=7.0)
    assert k == 1 and lag.refused == 1


def test_a_new_process_under_an_actor_id_starts_over() -> None:
    lag = LagBound(max_lag=10)
    lag.on_broadcast(1, 0)
    lag.admit(4, v(1), updates=0, now=0.0)
    assert lag.credit(10, now=0.0) == 0
    lag.forget(4)
    assert lag.credit(10, now=0.0) == NO_LIMIT


def test_weights_go_out_at_least_every_half_bound() -> None:
    assert LagBound(max_lag=0).weights_every(100) == 100
    assert LagBound(max_lag=100).weights_every(100) == 50
    assert LagBound(max_lag=1).weights_every(100) == 1
    assert LagBound(max_lag=400).weights_every(100) == 100
    with pytest.raises(ValueError):
        LagBound(max_lag=-1)


def test_lag_stats_mean_p95_max() -> None:
    stats = LagStats()
    assert stats.row()["policy_lag_updates_p95"] is None
    stats.add(np.arange(100))  # 0..99
    stats.add(np.array([], np.int64))
    row = stats.row()
    assert row == {"policy_lag_updates_mean": 49.5, "policy_lag_updates_p95": 94.0,
                   "policy_lag_updates_max": 99.0}
