"""The learner's side of the evaluators' control socket, run by the main thread each loop:
refused hellos are answered, hellos, heartbeats and results are fed to the evaluation schedule
(learner/evaluation.py), and whatever evaluation request is due is published."""
from __future__ import annotations

import logging
from typing import Callable

from fpac_async.wire.protocol import EVAL_RESULT, HEARTBEAT, HELLO
from learner.broadcaster import Broadcaster
from learner.evaluation import EvalRecord, EvalSchedule
from learner.receiver import Receiver

log = logging.getLogger("learner.service")


def serve_evaluators(r: Receiver, schedule: EvalSchedule, broadcaster: Broadcaster, version: int,
                     env_steps_of: Callable[[int], int | None]) -> list[EvalRecord]:
    """One pass over the control queues; the evaluations completed in it. `env_steps_of` maps a
    policy version to the env steps at its broadcast (the learning curve's x axis)."""
    while not r.refusals.empty():
        target, role, reason = r.refusals.get_nowait()
        log.error("refused: %s", reason)  # the reason names the sender
        broadcaster.publish_refuse(version, target, role, reason)
    done = []
    while not r.control.empty():
        msg = r.control.get_nowait()
        if msg.kind == HELLO:
            schedule.on_heartbeat(msg.actor)
            r.hello_pending.set()  # a new evaluator needs the policy
        elif msg.kind == HEARTBEAT:
            schedule.on_heartbeat(msg.actor, msg.meta["busy"], msg.meta.get("eval_id"),
                                  msg.meta.get("episodes_done", 0))
        elif msg.kind == EVAL_RESULT:
            record = schedule.on_result(msg.actor, msg.meta["eval_id"], msg.meta["returns"],
                                        msg.meta["lengths"], msg.version, env_steps_of,
                                        msg.meta.get("wall_s"))
            if record is not None:
                done.append(record)
    request = schedule.poll(r.env_steps, version)
    if request is not None:
        log.info("evaluation %d: %d episodes of version %d on evaluator %d", request.eval_id,
                 request.episodes, request.version, request.target)
        broadcaster.publish_eval(request.version, request.eval_id, request.episodes,
                                 request.target)
    return done
