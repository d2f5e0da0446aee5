"""A real actor (ActorLoop) outliving its learner: a NEW learner process on the same port refuses
its steps until it has said hello (a new run id in the broadcasts makes it say hello at once), and
refuses the actor outright if the new learner runs other settings. Real sockets on loopback."""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Iterator

import pytest
import torch

from actors.actor_loop import ActorLoop
from fpac_async.config import (AgentConfig, EnvConfig, LearnerConfig, ReplayConfig, RunConfig,
                               resolve)
from fpac_async.wire.transport import free_port_pair
from learner.service import LearnerService
from test_learner_service import start


def config(run_dir: str, port: int, episode: int = 50) -> RunConfig:
    return RunConfig(
        agent=AgentConfig(hidden_dim=32, num_points=4, conv_channels=8, batch_size=8),
        env=EnvConfig(task="point_reach", envs_per_actor=1, episode_control_steps=episode),
        replay=ReplayConfig(capacity=2000, initial_random_steps=10**6),  # no updates: fast
        learner=LearnerConfig(bind=f"tcp://127.0.0.1:{port}", gpus=0, eval_every_env_steps=0,
                              log_every_s=0.2),
        env_steps=10**6, run_dir=run_dir)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def wait_for(condition, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_actor_says_hello_to_a_new_learner_and_is_refused_by_one_with_other_settings(tmp_path):
    port = free_port_pair()
    env = resolve(config("x", port)).env
    loop = ActorLoop(3, env, f"127.0.0.1:{port}", seed=0, steps_per_message=4,
                     silence_hello_s=3600.0)  # only the run id can make it say hello again
    result: dict = {}
    actor = threading.Thread(target=lambda: result.update(reason=loop.run()), daemon=True)
    learners: list[tuple[LearnerService, threading.Thread]] = []

    def learner(name: str, episode: int = 50) -> LearnerService:
        service = LearnerService(config(str(tmp_path / name), port, episode), tensorboard=False,
                                 console=False)
        thread, _ = start(service)
        learners.append((service, thread))
        return service

    def stop(service: LearnerService) -> None:
        service.request_stop()
        for s, t in learners:
            if s is service:
                t.join(20)

    try:
        first = learner("a")
        actor.start()
        wait_for(lambda: first.receiver.agent_steps > 40, "steps at the first learner")
        stop(first)
        # The same settings, a new learner process: the old actor's steps are refused until
        # its hello (prompted by the new run id), then accepted.
        second = learner("b")
        wait_for(lambda: second.receiver.agent_steps > 40, "steps at the second learner", 40)
        assert 3 in second.receiver.accepted and actor.is_alive()
        stop(second)
        # Other settings (episodes of 100 control steps): the actor is refused and ends.
        third = learner("c", episode=100)
        actor.join(40)
        assert result.get("reason") == "refused"
        assert third.receiver.agent_steps == 0  # not one of its records was taken
        assert third.receiver.rejects.counts.get("config", 0) >= 1
    finally:  # never leave the actor thread running into other tests
        loop._stop = True
        for service, thread in learners:
            service.request_stop()
            thread.join(20)
        actor.join(10)


def test_steps_without_a_hello_are_refused(tmp_path):
    from fpac_async.wire import protocol as P
    import numpy as np
    import zmq
    from fpac_async.wire.transport import actor_sockets

    port = free_port_pair()
    service = LearnerService(dataclasses.replace(config(str(tmp_path / "r"), port)),
                             tensorboard=False, console=False)
    thread, code = start(service)
    ctx = zmq.Context()
    try:
        push, sub = actor_sockets(ctx, f"127.0.0.1:{port}")
        flags = np.array([P.FIRST, 0, 0, 0], np.uint8)
        push.send_multipart(P.encode(P.steps_message(
            5, 0, 0, 0, np.zeros((4, 3, 32, 32), np.uint8), np.zeros((4, 2), np.float32),
            np.zeros(4, np.float32), flags, np.zeros(4, np.int32))))
        wait_for(lambda: service.receiver.rejects.counts.get("unknown_actor") == 1,
                 "the refusal of steps from an actor that never said hello")
        assert service.receiver.agent_steps == 0
    finally:
        service.request_stop()
        thread.join(20)
        ctx.destroy(linger=0)
