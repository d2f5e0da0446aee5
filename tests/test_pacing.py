"""Actor-side pacing's arithmetic (learner/pacing.py) against hand-computed grants, the stream
positions it grants from (learner/stream_ledger.py), the ratio's admissible count
(learner/trainer.py) and when grants are published."""
from __future__ import annotations

import threading
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest

from fpac_async.wire import protocol as P
from learner.pacing import Pacer
from learner.stream_ledger import StreamLedger
from learner.trainer import ReplayRatio


def test_admissible_is_the_last_count_admit_lets_in() -> None:
    ratio = ReplayRatio(1.0, initial_agent_steps=1000, slack_updates=64)
    assert ratio.admissible(0) == 1064 and ratio.admissible(200) == 1264
    half = ReplayRatio(0.5, initial_agent_steps=10, slack_updates=4)  # 2 agent steps per update
    assert half.admissible(6) == 10 + (6 + 4) * 2
    for r in (ratio, half, ReplayRatio(Fraction(1, 3), 7, 3)):  # floors as admit()'s
        for u in (0, 5, 123):
            n = r.admissible(u)
            assert r.admit(n, u) and not r.admit(n + 1, u)
    assert ReplayRatio(0, 100).admissible(50) is None  # a ratio of 0 admits everything


def test_grants_split_what_the_lead_admits_over_every_stream() -> None:
    pacer = Pacer(lead_updates=200)
    # Actor 1 has 2 envs (furthest record taken: 40), actor 3 one env (at 90); 1264 admissible
    # at lead, 1100 taken: 164 agent steps over 3 streams -> ceil(164 / 3) = 55 records each.
    actors, upto = pacer.grants({3: (90, 1), 1: (40, 2)}, admissible=1264, agent_steps=1100)
    assert actors == [1, 3] and upto == [40 + 55, 90 + 55]
    # The learner ahead of what the lead admits: nothing more, actors wait at what was taken.
    assert pacer.grants({1: (40, 2)}, admissible=900, agent_steps=1100) == ([1], [40])
    # The same lead, more actors: the same records in flight in all (the lag stays flat).
    one = Pacer(100).grants({0: (0, 1)}, 400, 0)[1]
    four = Pacer(100).grants({a: (0, 1) for a in range(4)}, 400, 0)[1]
    assert sum(one) == 400 and sum(four) == 400


def test_no_grants_without_a_lead_a_ratio_or_an_actor() -> None:
    assert Pacer(0).grants({1: (5, 1)}, 100, 0) == ([], [])
    assert Pacer(10).grants({1: (5, 1)}, None, 0) == ([], [])
    assert Pacer(10).grants({}, 100, 0) == ([], [])
    with pytest.raises(ValueError):
        Pacer(-1)


def test_due_every_every_s() -> None:
    pacer = Pacer(50, every_s=0.5)
    assert pacer.due(0.0)
    pacer.worth_sending([1], 0, now=10.0, fresh=False)
    assert not pacer.due(10.4) and pacer.due(10.5)
    assert not Pacer(0).due(99.0)


def test_a_grant_goes_out_fresh_after_a_quantum_of_updates_or_once_a_second() -> None:
    """The learner looks every 50 ms, but grants anew only when it has run lead // 4 updates
    since the last grant (room for the actors), after new weights, or a second on: a grant for
    every chunk taken could crowd the weights out of a slow actor's SUB queue."""
    pacer = Pacer(200, every_s=0.05, resend_s=1.0)  # quantum 50
    assert pacer.worth_sending([1, 2], updates=0, now=0.0, fresh=False)
    assert not pacer.worth_sending([1, 2], updates=49, now=0.5, fresh=False)
    assert pacer.worth_sending([1, 2], updates=50, now=0.55, fresh=False)  # a quantum run
    assert not pacer.worth_sending([1, 2], updates=60, now=1.5, fresh=False)
    assert pacer.worth_sending([1, 2], updates=60, now=1.55, fresh=False)  # a lost one replaced
    assert pacer.worth_sending([1, 2], updates=61, now=1.6, fresh=True)  # after new weights
    assert not pacer.worth_sending([], updates=999, now=9.0, fresh=True)  # nobody to pace
    assert pacer.sent == 4 and pacer.sent_at == 1.6 and pacer.sent_updates == 61
    assert Pacer(3).quantum == 1


def test_ledger_positions_are_each_actors_furthest_stream_and_restart_with_it() -> None:
    ledger = StreamLedger()
    ledger.take(1, 0, 0, 16)
    ledger.take(1, 1, 0, 16)
    ledger.take(1, 0, 16, 8)  # env 0 is a chunk ahead (a partial chunk of env 1 not yet read)
    ledger.take(2, 0, 100, 4)  # a resumed learner: the first chunk sets where it stands
    assert ledger.positions() == {1: (24, 2), 2: (104, 1)}
    ledger.on_hello(1, pid=10)
    ledger.on_hello(1, pid=11)  # a new process: its streams start over, not yet read
    assert ledger.positions() == {2: (104, 1)}


class _Broadcaster:
    def __init__(self) -> None:
        self.grants: list[tuple[int, list, list]] = []

    def publish_grant(self, version: int, actors: list, upto: list) -> None:
        self.grants.append((version, actors, upto))


def _receiver(live: set[int], budget: bool = False) -> SimpleNamespace:
    ledger = StreamLedger()
    for a in (1, 2, 3):
        ledger.take(a, 0, 0, 10 * a)
    reached = threading.Event()
    if budget:
        reached.set()
    # An actor waiting at its grant sends nothing: the pacer must ask for a window as long as
    # the actors' own fallback (named by the receiver's 10 s default, none would be after a stall).
    return SimpleNamespace(ledger=ledger, actors=lambda window_s=10.0: live if window_s >= 30 else set(), agent_steps=1050,
                           budget_reached=reached)


def test_publish_grants_the_live_actors_and_none_while_refilling_or_after_the_budget() -> None:
    trainer = SimpleNamespace(refilling=False, updates=40, ratio=ReplayRatio(1.0, 1000, 64))
    out = _Broadcaster()
    Pacer(100).publish(_receiver({1, 3}), trainer, out, version=7)
    # admissible(40 + 100) = 1204; 154 more over actor 1's and 3's one stream each: 77.
    assert out.grants == [(7, [1, 3], [10 + 77, 30 + 77])]  # actor 2 is silent: not paced
    Pacer(100).publish(_receiver({1, 3}, budget=True), trainer, out, version=8)
    Pacer(100).publish(_receiver({1, 3}), SimpleNamespace(**{**vars(trainer), "refilling": True}),
                       out, version=9)
    Pacer(0).publish(_receiver({1, 3}), trainer, out, version=10)
    assert len(out.grants) == 1


def test_grant_round_trip_and_hostile_grants() -> None:
    msg = P.grant_message(4, 9, [1, 3], [87, 107], run=12345)
    out = P.decode([bytes(f) for f in P.encode(msg)])
    assert out.kind == P.GRANT and out.version == 9 and out.meta == {"run": 12345}
    assert out.arrays["actors"].tolist() == [1, 3] and out.arrays["upto"].tolist() == [87, 107]
    for actors, upto, reason in (([1, 3], [87], "schema"), ([1], [-1], "schema"),
                                 ([-2], [5], "schema"), (list(range(4097)), [0] * 4097, "shape")):
        frames = P.encode(P.Message(P.GRANT, 0, 0, 0, 0, {
            "actors": np.asarray(actors, np.int64), "upto": np.asarray(upto, np.int64)}, {}))
        with pytest.raises(P.ProtocolError) as e:
            P.decode([bytes(f) for f in frames])
        assert e.value.reason == reason, (actors, upto, e.value)
