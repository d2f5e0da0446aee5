"""Restart back-off (actors/backoff.py, Kubernetes' CrashLoopBackOff): doubling delays, a cap,
a reset after a stable run, and giving up only when asked to."""
from __future__ import annotations

import pytest

from actors.backoff import RestartBackoff


def crash_series(b: RestartBackoff, run_s: float, n: int, t: float = 0.0) -> list[float | None]:
    """n crashes, each after the child ran run_s, restarted after the delay it was given."""
    delays = []
    for _ in range(n):
        b.started(t)
        t += run_s
        d = b.crashed(t)
        delays.append(d)
        t += d or 0.0
    return delays


def test_delays_double_from_the_base_up_to_the_cap():
    b = RestartBackoff(base_s=1.0, max_s=60.0, reset_after_s=60.0)
    assert crash_series(b, 0.5, 9) == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert b.crashes_in_a_row == 9


def test_a_stable_run_resets_the_series():
    b = RestartBackoff(base_s=1.0, max_s=60.0, reset_after_s=60.0)
    assert crash_series(b, 1.0, 4) == [1, 2, 4, 8]
    b.started(1000.0)
    assert b.crashed(1000.0 + 60.0) == 1  # it ran 60 s: stable, a new series
    b.started(1061.0)
    assert b.crashed(1061.0 + 59.0) == 2  # ran only 59 s: the series goes on
    b.started(2000.0)
    assert b.crashed(2059.9) == 4  # 59.9 s is not stable


def test_never_given_up_by_default_but_max_restarts_gives_up():
    assert None not in crash_series(RestartBackoff(), 0.0, 50)
    b = RestartBackoff(max_restarts=2)
    assert crash_series(b, 0.0, 3) == [1, 2, None]


@pytest.mark.parametrize("bad", [dict(base_s=0), dict(base_s=5, max_s=2), dict(reset_after_s=-1),
                                 dict(max_restarts=-1)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match="base_s"):
        RestartBackoff(**bad)
