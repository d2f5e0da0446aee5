"""A running learner fed hostile input over its REAL data and control PULL sockets: every bad
message is counted per reason and dropped, the learner keeps running, and good messages are still
accepted afterwards."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Callable, Iterator

import msgpack
import numpy as np
import pytest
import torch
import zmq

from fpac_async.wire.transport import free_port_pair
from fpac_async.wire import protocol as P
from fpac_async.config import (AgentConfig, EnvConfig, LearnerConfig, ReplayConfig, RunConfig,
                               resolve)
from fpac_async.settings import run_settings
from fpac_async.wire.transport import actor_endpoints, actor_sockets
from learner.service import LearnerService

LOOPBACK = "127.0.0.1"
CAP = 2**20  # max_message_bytes of the learner under test


def steps(side: int = 32, action_dim: int = 2, n: int = 4, step0: int = 0) -> P.Message:
    flags = np.zeros(n, np.uint8)
    if step0 == 0:
        flags[0] = P.FIRST
    return P.steps_message(1, 0, step0, step0, np.full((n, 3, side, side), 9, np.uint8),
                           np.zeros((n, action_dim), np.float32), np.ones(n, np.float32), flags,
                           np.zeros(n, np.int32))


def frames_of(msg: P.Message) -> list[bytes]:
    return [bytes(f) for f in P.encode(msg)]


def patched(msg: P.Message, edit: Callable[[dict], None]) -> list[bytes]:
    """A message whose header was edited after encoding (what a buggy or hostile peer sends)."""
    frames = frames_of(msg)
    header = msgpack.unpackb(frames[0])
    edit(header)
    return [msgpack.packb(header), *frames[1:]]


def hostile_messages() -> list[tuple[str, list[bytes]]]:
    good = frames_of(steps())

    def set_arrays(i: int, j: int, value: object) -> Callable[[dict], None]:
        return lambda h: h["arrays"][i].__setitem__(j, value)

    return [
        ("truncated", [*good[:-1], good[-1][:-1]]),  # last array one byte short
        ("truncated", good[:-1]),  # a frame missing
        ("oversized", [good[0], *[b"\0" * (CAP // 4)] * 5]),  # frames under the cap, sum over it
        ("version", patched(steps(), lambda h: h.__setitem__("v", 99))),
        ("magic", patched(steps(), lambda h: h.__setitem__("magic", "NOPE"))),
        ("dtype", patched(steps(), set_arrays(0, 1, "<f4"))),  # obs declared float32
        ("shape", patched(steps(), set_arrays(0, 2, [4, 3, 32, 31]))),  # bytes do not fit
        ("garbage", [b"\x00\xff this is not msgpack \xc1"]),
        ("garbage", [b""]),
        ("schema", patched(steps(), lambda h: h["meta"].pop("step0"))),
        # Valid messages that do not fit this run's task (point_reach: 32x32 frames, 2 actions).
        ("shape", frames_of(steps(side=16))),
        ("shape", frames_of(steps(action_dim=3))),
        ("shape", frames_of(P.hello_message(1, "point_reach", 1, (3, 64, 64), 2))),
        ("task", frames_of(P.hello_message(1, "cartpole_swingup", 1, (3, 32, 32), 2))),
        ("task", frames_of(P.weights_message(0, 1, np.zeros(3, np.float32), [["w", [3]]]))),
        # A hello without run settings, or with another action repeat: refused by name.
        ("config", frames_of(P.hello_message(1, "point_reach", 1, (3, 32, 32), 2))),
        ("config", frames_of(P.hello_message(1, "point_reach", 1, (3, 32, 32), 2,
                                             settings={**SETTINGS, "action_repeat": 4}))),
        # Evaluator kinds belong on the control socket.
        ("task", frames_of(P.heartbeat_message(1, 0, 0, False, settings=SETTINGS))),
    ]


def hostile_control_messages() -> list[tuple[str, list[bytes]]]:
    """What the control socket (evaluators) gets: the same validation, its own kinds only."""
    beat = frames_of(P.heartbeat_message(2, 0, 0, False, settings=SETTINGS))
    return [
        ("garbage", [b"\x00\xff not msgpack"]),
        ("schema", patched(P.heartbeat_message(2, 0, 0, False),
                           lambda h: h["meta"].__setitem__("busy", "yes"))),
        ("task", frames_of(steps())),  # training data on the control socket
        ("task", frames_of(P.stop_message(0, 0))),
        ("config", frames_of(P.heartbeat_message(2, 0, 0, False))),  # no settings
        ("task", frames_of(P.hello_message(2, "point_reach", 1, (3, 32, 32), 2, role=P.ACTOR,
                                           settings=SETTINGS))),  # an actor's hello
        ("oversized", [beat[0], b"\0" * 2**19, b"\0" * (2**19 + 16)]),  # 1 MiB cap in all
    ]


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(run_dir: str, port: int) -> RunConfig:
    return RunConfig(
        agent=AgentConfig(hidden_dim=32, num_points=4, conv_channels=8, batch_size=8),
        env=EnvConfig(task="point_reach"),
        replay=ReplayConfig(capacity=500, initial_random_steps=1000),
        learner=LearnerConfig(bind=f"tcp://{LOOPBACK}:{port}", gpus=0, max_message_bytes=CAP,
                              log_every_s=0.1, eval_every_env_steps=0),
        env_steps=10**6, run_dir=run_dir)


_RESOLVED = resolve(_config("unused", 5555))
SETTINGS = run_settings(_RESOLVED.env, _RESOLVED.agent.frame_stack, _RESOLVED.agent.encoder)


def test_hostile_input_is_counted_and_survived(tmp_path, ctx: zmq.Context) -> None:
    run_dir, port = str(tmp_path / "run"), free_port_pair()
    service = LearnerService(_config(run_dir, port), tensorboard=False, console=False)
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(service.run()), daemon=True)
    thread.start()
    assert service.ready.wait(20), "the learner did not start"
    receiver = service.receiver
    assert receiver is not None

    hostile = ctx.socket(zmq.PUSH)
    hostile.connect(f"tcp://{LOOPBACK}:{port}")
    control = ctx.socket(zmq.PUSH)
    control.connect(actor_endpoints(f"{LOOPBACK}:{port}").control)
    cases = hostile_messages() + hostile_control_messages()
    for _, frames in hostile_messages():
        hostile.send_multipart(frames)
    for _, frames in hostile_control_messages():
        control.send_multipart(frames)
    expected: dict[str, int] = {}
    for reason, _ in cases:
        expected[reason] = expected.get(reason, 0) + 1
    wait_for(lambda: receiver.rejects.total == len(cases), "every hostile message to be handled")
    assert receiver.rejects.counts == expected
    assert receiver.agent_steps == 0 and len(service.replay) == 0

    # A single frame over the cap is dropped by libzmq (MAXMSGSIZE) before Python sees it, and
    # the peer is disconnected: not counted, and the learner carries on.
    big = ctx.socket(zmq.PUSH)
    big.connect(f"tcp://{LOOPBACK}:{port}")
    big.send_multipart([b"\0" * (CAP + 1)])

    # Good messages still work: hello gets the policy, steps are stored and counted.
    push, sub = actor_sockets(ctx, f"{LOOPBACK}:{port}")
    policy = None
    deadline = time.monotonic() + 15
    while policy is None and time.monotonic() < deadline:
        push.send_multipart(P.encode(P.hello_message(1, "point_reach", os.getpid(), (3, 32, 32),
                                                     2, role=P.ACTOR, settings=SETTINGS)))
        while policy is None and sub.poll(200, zmq.POLLIN):
            msg = P.decode(sub.recv_multipart())  # refusals of the hostile hellos come first
            policy = msg if msg.kind == P.POLICY else None
    assert policy is not None and policy.kind == P.POLICY
    push.send_multipart(P.encode(steps(n=4, step0=0)))
    push.send_multipart(P.encode(steps(n=4, step0=4)))
    wait_for(lambda: receiver.agent_steps == 7, "the good steps (7 non-FIRST records)")
    assert len(service.replay) == 8
    assert receiver.rejects.total == len(cases)
    # Records claiming a policy version this learner never broadcast: counted, dropped.
    for bad_version in (2**31 - 1, -1):
        bad = steps(n=4, step0=8)
        bad.arrays["version"] = np.full(4, bad_version, np.int32)
        push.send_multipart(P.encode(bad))
    wait_for(lambda: receiver.rejects.counts.get("policy_version") == 2, "the bad versions")
    assert receiver.agent_steps == 7 and len(service.replay) == 8
    expected["policy_version"] = 2

    time.sleep(0.3)  # at least one metrics row after the rejects (log_every_s = 0.1)
    service.request_stop(signal.SIGTERM)
    thread.join(20)
    assert code == [128 + signal.SIGTERM]  # checkpointed, not finished
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        last = [json.loads(line) for line in f][-1]
    assert last["rejected_messages"] == len(cases) + 2
    assert {k: last[f"rejected_{k}"] for k in expected} == expected
    assert last["agent_steps"] == 7
    assert os.path.exists(os.path.join(run_dir, "checkpoints", "latest"))
