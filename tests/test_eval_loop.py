"""The evaluator process's loop (actors/eval_loop.py) against the fake learner, over real sockets.

It says hello and beats on the CONTROL socket, runs a request's deterministic episodes of one
policy version with heartbeats that say it is busy, answers a re-published request from its
stored result without running the episodes again, and ends on stop or on its own refusal.
"""
from __future__ import annotations

import threading

import numpy as np

from actors.eval_loop import EvalLoop
from fpac_async.wire import protocol as P
from fpac_async.config import EnvConfig, RunConfig, resolve
from fpac_async.settings import run_settings
from test_actor_service import FakeLearner

ENV = resolve(RunConfig(env=EnvConfig(task="point_reach"))).env


def _start(learner: FakeLearner, **kw) -> tuple[threading.Thread, dict, EvalLoop]:
    kw.setdefault("max_parallel", 2)  # 4 episodes in 2 rounds: episodes_done goes 0, 2
    loop = EvalLoop(0, ENV, learner.endpoint, seed=3, heartbeat_every_s=0.0, episodes=4, **kw)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(reason=loop.run()), daemon=True)
    thread.start()
    return thread, result, loop


def test_evaluator_runs_a_request_with_heartbeats_and_answers_a_repeat_from_memory():
    learner = FakeLearner(random=True)
    try:
        thread, result, loop = _start(learner)
        learner.pump(lambda f: len(f.messages[P.HELLO]) >= 1)  # answered with the policy
        hello = learner.messages[P.HELLO][0]
        assert hello.meta["role"] == P.EVALUATOR and hello.actor == 0
        assert hello.meta["settings"] == run_settings(ENV, 2, "fpac")
        learner.pump(lambda f: len(f.messages[P.HEARTBEAT]) >= 3)
        assert not learner.messages[P.STEPS]  # an evaluator sends no training data
        learner.publish_weights(2, scale=0.5)
        learner.publish(P.eval_message(learner.seq, 2, eval_id=77, episodes=4, target_actor=1))
        learner.publish(P.eval_message(learner.seq, 2, eval_id=78, episodes=4, target_actor=0))
        learner.pump(lambda f: len(f.messages[P.EVAL_RESULT]) >= 1)
        [answer] = learner.messages[P.EVAL_RESULT]
        assert answer.meta["eval_id"] == 78 and answer.version == 2  # the version evaluated
        assert answer.meta["lengths"] == [50] * 4 and len(answer.meta["returns"]) == 4
        assert answer.meta["wall_s"] > 0
        busy = [m for m in learner.messages[P.HEARTBEAT] if m.meta["busy"]]
        assert busy and all(m.meta["eval_id"] == 78 for m in busy)
        assert [m.meta["episodes_done"] for m in busy][-1] == 2  # the first round of 2 is done
        # The same request again (the learner's PUB may have lost our answer's request...): the
        # stored answer is sent, the episodes are not run again.
        learner.publish(P.eval_message(learner.seq, 2, eval_id=78, episodes=4, target_actor=0))
        learner.pump(lambda f: len(f.messages[P.EVAL_RESULT]) >= 2)
        assert loop.completed == 1
        assert learner.messages[P.EVAL_RESULT][1].meta == answer.meta
        learner.publish(P.stop_message(learner.seq, 2))
        learner.pump(lambda f: not thread.is_alive())
    finally:
        learner.close()
    assert result["reason"] == "stop"


def test_evaluator_waits_for_the_requested_version_then_evaluates_it():
    learner = FakeLearner(random=True)
    try:
        thread, result, loop = _start(learner)
        learner.pump(lambda f: len(f.messages[P.HEARTBEAT]) >= 2)
        # Asked for version 5 while holding 0: it says hello (the learner re-publishes its
        # policy) and waits; the weights of version 5 then arrive.
        learner.publish(P.eval_message(learner.seq, 5, eval_id=1, episodes=2, target_actor=0))
        hellos = len(learner.messages[P.HELLO])
        learner.pump(lambda f: len(f.messages[P.HELLO]) > hellos)
        learner.publish_weights(5)
        learner.pump(lambda f: len(f.messages[P.EVAL_RESULT]) >= 1)
        assert learner.messages[P.EVAL_RESULT][0].version == 5
        learner.publish(P.refuse_message(learner.seq, 5, 0, P.ACTOR, "an actor 0, not us"))
        learner.publish(P.refuse_message(learner.seq, 5, 0, P.EVALUATOR, "--action-repeat 2"))
        learner.pump(lambda f: not thread.is_alive())
    finally:
        learner.close()
    assert result["reason"] == "refused"


def test_weights_arriving_during_an_evaluation_wait_until_it_ends():
    learner = FakeLearner(random=True)
    try:
        thread, result, loop = _start(learner)
        applied_while_busy = []
        apply = loop._apply

        def watched(msg: P.Message) -> None:  # what the evaluator does with weights, and when
            applied_while_busy.append(loop._busy is not None and msg.version == 2)
            apply(msg)
        loop._apply = watched
        learner.pump(lambda f: len(f.messages[P.HEARTBEAT]) >= 2)
        learner.publish_weights(1)
        learner.publish(P.eval_message(learner.seq, 1, eval_id=3, episodes=4, target_actor=0))
        learner.pump(lambda f: any(m.meta["busy"] for m in f.messages[P.HEARTBEAT]))
        learner.publish_weights(2, scale=0.0)
        learner.pump(lambda f: len(f.messages[P.EVAL_RESULT]) >= 1)
        assert learner.messages[P.EVAL_RESULT][0].version == 1  # one version throughout
        learner.pump(lambda f: f.messages[P.HEARTBEAT][-1].version == 2)  # applied after
        assert applied_while_busy and not any(applied_while_busy)
        learner.publish(P.stop_message(learner.seq, 2))
        learner.pump(lambda f: not thread.is_alive())
    finally:
        learner.close()
    assert result["reason"] == "stop"
    assert np.isfinite(learner.messages[P.EVAL_RESULT][0].meta["returns"]).all()
