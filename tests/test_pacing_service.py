"""Actor-side pacing on the real learner service with four real ActorLoop actors over loopback
(learner/pacing.py): with grants, the typical window's policy lag (the median of the windows'
p95) stays within twice the lead plus one broadcast interval, although each actor's queues alone
hold more records than that (without grants the lag grows with the actors' queues: 300-420)."""
from __future__ import annotations

import dataclasses
import statistics
import threading

import pytest
import zmq

from actors.actor_loop import ActorLoop
from fpac_async.config import EnvConfig, RunConfig, resolve
from fpac_async.wire.transport import free_port_pair
from learner.service import LearnerService
from test_learner_service import FakeActor, rows, start, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LEAD, EVERY, PER_MESSAGE, INITIAL = 20, 10, 8, 100


def run_paced(run_dir: str, lead: int, actors: int = 4, env_steps: int = 1200) -> list[dict]:
    port = free_port_pair()
    cfg = tiny_config(run_dir, port, env_steps)
    # All actors start together (the start barrier) and each is read from in the random phase:
    # an actor the learner has not read from yet is not paced (a late joiner's first queue).
    cfg = dataclasses.replace(cfg, learner=dataclasses.replace(
        cfg.learner, actor_lead=lead, weights_every=EVERY, eval_every_env_steps=10**6,
        log_every_s=0.1, save_replay=False, checkpoint_every=10**6, wait_for_actors=actors),
        replay=dataclasses.replace(cfg.replay, initial_random_steps=INITIAL))
    service = LearnerService(cfg, tensorboard=False, console=False, eval_timeout_s=30,
                             final_eval_timeout_s=30)
    thread, code = start(service)
    env = resolve(RunConfig(env=EnvConfig(task="point_reach", envs_per_actor=1))).env
    reasons: dict[int, str] = {}
    loops = [ActorLoop(a, env, f"127.0.0.1:{port}", seed=a, steps_per_message=PER_MESSAGE,
                       stats_every_s=0.5, probe_renderer=False) for a in range(actors)]
    threads = [threading.Thread(target=lambda lp=lp: reasons.update({lp.actor_id: lp.run()}),
                                daemon=True) for lp in loops]
    ctx = zmq.Context()
    evaluator = FakeActor(ctx, port, actor=99, evaluator_id=0)  # answers the final evaluation
    for t in threads:
        t.start()
    evaluator.hello_until_policy()  # once the actors' hellos have opened the start barrier
    try:
        while thread.is_alive() and not evaluator.stopped:
            evaluator.drain(wait_ms=50)
        thread.join(60)
        for t in threads:
            t.join(30)
    finally:
        ctx.destroy(linger=0)
    assert code == [0] and set(reasons.values()) == {"stop"}, (code, reasons)
    return rows(run_dir)


def test_four_paced_actors_keep_the_lag_within_the_lead(tmp_path) -> None:
    table = run_paced(str(tmp_path / "run"), LEAD)
    assert table[-1]["updates"] == table[-1]["agent_steps"] - INITIAL  # the ratio, over the run
    p95 = [r["policy_lag_updates_p95"] for r in table
           if r["policy_lag_updates_p95"] is not None and r["updates"] > 0]
    # A record is granted at most LEAD updates' worth ahead of the update it is acted at, by
    # weights at most one broadcast interval old; an actor past a grant that shrank overshoots
    # by at most its last share. That bounds the lag of records sent when acted. On a loaded
    # machine (two benchmarks, or 4 CPU hogs) one window's max reached 64-177 (37-54
    # otherwise), most likely an actor thread starved between acting and sending (4 actors,
    # the learner and its receiver share one process here) while the learner went on with the
    # others' records. So the typical window is checked, not the worst: the median of the
    # windows' p95 (323 with lead 0, no grants; 300-420 measured before).
    assert p95 and statistics.median(p95) <= 2 * (LEAD + EVERY), p95
