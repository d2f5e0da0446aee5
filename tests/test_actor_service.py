"""The actor service end to end: `fpac-actors` processes against a FAKE learner (PULL + PUB).

The fake learner is written here from the protocol alone: it answers every hello by re-publishing
its policy (a tiny fpac SAC exported to TorchScript) and never broadcasts otherwise, so an actor
that starts late can only get the policy through hello. Also imported by the other actor tests.
"""
from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from typing import Callable

import numpy as np
import pytest
import zmq

from fpac_async.wire import protocol as P
from fpac_async.config import AgentConfig
from fpac_async.agent.export import export_policy, flat_weights, script_to_bytes
from fpac_async.agent.sac import SAC
from fpac_async.wire.transport import pub_socket, pull_socket, recv_message, send_message

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_AGENT = AgentConfig(num_points=4, conv_channels=8, hidden_dim=32, hidden_layers=1)


@functools.lru_cache(maxsize=None)
def tiny_policy(seed: int = 0) -> tuple[bytes, np.ndarray, list]:
    """TorchScript bytes, flat weights and layout of a small fpac policy for point_reach."""
    import torch
    torch.manual_seed(seed)
    module = export_policy(SAC(TINY_AGENT, (6, 32, 32), 2))
    flat, layout = flat_weights(module)
    return script_to_bytes(module), flat, [[n, list(s)] for n, s in layout]


class FakeLearner:
    """Binds PULL on a free port, PUB on the next and the control PULL (evaluators) on the one
    after; collects every message by kind."""

    def __init__(self, random: bool = True) -> None:
        self.ctx = zmq.Context()
        for _ in range(50):
            port = int(np.random.default_rng().integers(20000, 60000))
            try:
                self.pull = pull_socket(self.ctx, f"tcp://127.0.0.1:{port}")
            except zmq.ZMQError:
                continue
            try:
                self.pub = pub_socket(self.ctx, f"tcp://127.0.0.1:{port + 1}")
            except zmq.ZMQError:
                self.pull.close(linger=0)
                continue
            try:
                self.control = pull_socket(self.ctx, f"tcp://127.0.0.1:{port + 2}")
            except zmq.ZMQError:
                self.pull.close(linger=0)
                self.pub.close(linger=0)
                continue
            break
        else:
            raise RuntimeError("no free port pair")
        self.port = port
        self.endpoint = f"127.0.0.1:{port}"
        self._poller = zmq.Poller()
        self._poller.register(self.pull, zmq.POLLIN)
        self._poller.register(self.control, zmq.POLLIN)
        self.script, self.flat, self.layout = tiny_policy()
        self.version = 0
        self.random = random
        self.seq = 0
        self.messages: dict[str, list[P.Message]] = defaultdict(list)

    def publish(self, msg: P.Message) -> None:
        send_message(self.pub, msg)
        self.seq += 1

    def publish_policy(self) -> None:
        self.publish(P.policy_message(self.seq, self.version, self.script, self.flat,
                                      self.layout, self.random))

    def publish_weights(self, version: int, scale: float = 1.0,
                        log_std_bias: float | None = None, bf16: bool = False) -> None:
        """Weights scaled by `scale`; log_std_bias: set the actor's last-layer log-std biases
        (the second half of its outputs) to this value (a policy of known noise); bf16: sent as
        `--weights-wire bf16` sends them."""
        self.version = version
        self.random = False
        self.flat = (self.flat * np.float32(scale)).astype(np.float32)
        if log_std_bias is not None:
            offset = 0
            last = [n for n, _ in self.layout if n.startswith("actor.") and n.endswith(".bias")][-1]
            for name, shape in self.layout:
                size = int(np.prod(shape))
                if name == last:
                    self.flat[offset + size // 2:offset + size] = log_std_bias
                offset += size
        self.publish(P.weights_message(self.seq, version, self.flat, self.layout, bf16=bf16))

    def pump(self, until: Callable[["FakeLearner"], bool], timeout_s: float = 20.0) -> None:
        """Receive (answering hellos) until `until(self)` holds; fail after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while not until(self):
            if time.monotonic() > deadline:
                counts = {k: len(v) for k, v in self.messages.items()}
                raise AssertionError(f"fake learner timed out; got {counts}")
            self._receive_one(100)

    def drain(self, quiet_ms: int = 500) -> None:
        """Receive until nothing arrives for quiet_ms."""
        while self._receive_one(quiet_ms):
            pass

    def _receive_one(self, timeout_ms: int) -> bool:
        ready = dict(self._poller.poll(timeout_ms))
        if not ready:
            return False
        sock = self.control if self.control in ready else self.pull
        msg = recv_message(sock, timeout_ms=0)
        if msg is None:
            return False
        if msg.kind == P.STEPS:  # decoded arrays view the received frames: copy to keep
            msg.arrays = {k: np.array(v) for k, v in msg.arrays.items()}
        self.messages[msg.kind].append(msg)
        if msg.kind == P.HELLO:
            self.publish_policy()
        return True

    def records(self, actor: int) -> dict[int, list[P.Message]]:
        """Steps messages of one actor per env, in arrival order."""
        out: dict[int, list[P.Message]] = defaultdict(list)
        for m in self.messages[P.STEPS]:
            if m.actor == actor:
                out[m.env].append(m)
        return out

    def close(self) -> None:
        for sock in (self.pull, self.pub, self.control):
            sock.close(linger=0)
        self.ctx.term()


def steps_of(learner: FakeLearner, actor: int) -> int:
    return sum(len(m.arrays["flags"]) for msgs in learner.records(actor).values() for m in msgs)


def start_actors(learner: FakeLearner, n: int, offset: int = 0) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "actors.cli", "--n", str(n), "--task", "point_reach",
           "--learner", learner.endpoint, "--actor-id-offset", str(offset),
           "--steps-per-message", "8", "--log-level", "WARNING"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    return out.decode(errors="replace")


@pytest.fixture
def learner():
    fake = FakeLearner()
    yield fake
    fake.close()


def test_cli_actors_stream_and_late_joiner_gets_policy_through_hello(learner):
    first = start_actors(learner, n=2)
    late = None
    try:
        learner.pump(lambda f: steps_of(f, 0) >= 60 and steps_of(f, 1) >= 60, timeout_s=40)
        # The learner never broadcasts unasked: a late actor gets the policy only via hello.
        hellos_before = len(learner.messages[P.HELLO])
        late = start_actors(learner, n=1, offset=7)
        learner.pump(lambda f: steps_of(f, 7) >= 30, timeout_s=40)
        assert len(learner.messages[P.HELLO]) > hellos_before
        assert any(m.actor == 7 for m in learner.messages[P.HELLO])
        hello = next(m for m in learner.messages[P.HELLO] if m.actor == 7)
        assert hello.meta["task"] == "point_reach" and hello.meta["obs_shape"] == [3, 32, 32]
    finally:
        outputs = [stop(p) for p in (first, late) if p is not None]
    assert first.returncode == 0 and late.returncode == 0, outputs
    # Distinct seeds per actor: the first frames of actors 0 and 1 differ.
    f0 = learner.records(0)[0][0].arrays["obs"][0]
    f1 = learner.records(1)[0][0].arrays["obs"][0]
    assert not np.array_equal(f0, f1)
    for actor in (0, 1, 7):
        for env, msgs in learner.records(actor).items():
            assert [m.seq for m in msgs] == list(range(len(msgs)))
            assert msgs[0].meta["step0"] == 0 and msgs[0].arrays["flags"][0] == P.FIRST


def test_cli_exits_2_with_a_clear_message_on_a_bad_task():
    proc = subprocess.run([sys.executable, "-m", "actors.cli", "--task", "no_such_task",
                           "--learner", "127.0.0.1:5555"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown task 'no_such_task'" in proc.stderr
