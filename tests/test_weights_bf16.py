"""`--weights-wire bf16` (issue 19): the rounding against hand-computed bit patterns, the weights
message round trip and its hostile forms, and a real broadcast over loopback into an actor's
TorchScript policy."""
from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import pytest
import zmq

from actors.policy import ActorPolicy
from fpac_async.agent.export import export_policy, flat_weights, script_to_bytes
from fpac_async.agent.sac import SAC
from fpac_async.config import ConfigError, LearnerConfig, RunConfig, resolve
from fpac_async.wire import protocol as P
from fpac_async.wire.bf16 import from_bf16, to_bf16
from fpac_async.wire.transport import free_port_pair
from learner.broadcaster import Broadcaster, policy_weights
from learner.service import LearnerService
from test_actor_loop import _run_actor
from test_actor_service import FakeLearner
from test_eval_loop import _start
from test_learner_service import FakeActor, start, tiny_config
from test_protocol import LAYOUT, header_of, rejects, set_array

F = np.float32


@pytest.mark.parametrize("value, bits", [
    (1.0, 0x3F80), (-2.0, 0xC000), (0.0, 0x0000), (-0.0, 0x8000),
    (1 + 2**-8, 0x3F80),             # halfway between 1 and 1 + 2**-7: ties to even (down)
    (1 + 2**-7 + 2**-8, 0x3F82),     # halfway, odd below: ties to even (up)
    (1 + 2**-8 + 2**-20, 0x3F81),    # just over halfway: up
    (3.140625, 0x4049),              # exactly representable: 1.1001001b x 2
    (float(np.finfo(F).max), 0x7F80),  # rounds up past the largest bf16: inf
    (float("inf"), 0x7F80), (float("-inf"), 0xFF80)])
def test_rounding_against_hand_computed_bits(value: float, bits: int) -> None:
    assert int(to_bf16(np.array([value], F))[0]) == bits


def test_nan_stays_nan_and_decoding_is_exact() -> None:
    assert np.isnan(from_bf16(to_bf16(np.array([np.nan], F))))[0]
    assert from_bf16(np.array([0x3F82], np.uint16))[0] == F(1 + 2**-6)
    w = np.random.default_rng(0).standard_normal(10_000).astype(F)
    back = from_bf16(to_bf16(w))
    assert np.all(np.abs(back - w) <= np.abs(w) * 2**-8)  # within half a bf16 ulp
    assert np.array_equal(from_bf16(to_bf16(back)), back)  # bf16 values are fixed points


def test_weights_message_round_trip_halves_the_bytes() -> None:
    w = np.random.default_rng(1).standard_normal(10).astype(F)
    f32 = P.encode(P.weights_message(3, 4, w, LAYOUT))
    bf16 = [bytes(f) for f in P.encode(P.weights_message(3, 4, w, LAYOUT, bf16=True))]
    assert len(bf16[1]) * 2 == len(bytes(f32[1])) == 40
    msg = P.decode(bf16)
    assert set(msg.arrays) == {"weights_bf16"}
    assert np.array_equal(P.weights_of(msg), from_bf16(to_bf16(w)))
    assert not np.array_equal(P.weights_of(msg), w)  # rounded: not the f32 weights
    assert np.array_equal(P.weights_of(P.decode(f32)), w)


def test_hostile_weights_messages_are_rejected() -> None:
    w = np.arange(10, dtype=F)
    bf16 = [bytes(f) for f in P.encode(P.weights_message(1, 1, w, LAYOUT, bf16=True))]
    f32 = [bytes(f) for f in P.encode(P.weights_message(1, 1, w, LAYOUT))]
    both = header_of(f32)
    both["arrays"] += header_of(bf16)["arrays"]
    rejects([msgpack.packb(both, use_bin_type=True), f32[1], bf16[1]], "schema")
    neither = {**header_of(f32), "arrays": []}
    rejects([msgpack.packb(neither, use_bin_type=True)], "schema")
    rejects(set_array(bf16, "weights_bf16", ["weights_bf16", "<f4", [5]]), "dtype")
    rejects(set_array(bf16, "weights_bf16", ["weights_bf16", "<u2", [9]], bf16[1][:18]), "schema")
    policy = [bytes(f) for f in P.encode(P.policy_message(1, 1, b"ts", w, LAYOUT))]
    spec = header_of(policy)["arrays"][1]
    rejects(set_array(policy, spec[0], ["weights_bf16", "<u2", [10]], bf16[1]), "schema")


def test_weights_wire_setting_is_checked() -> None:
    with pytest.raises(ConfigError, match="weights_wire"):
        resolve(RunConfig(learner=LearnerConfig(weights_wire="fp8")))


def test_a_bf16_broadcast_reaches_an_actor_policy_rounded() -> None:
    """The learner's Broadcaster over real PUB/SUB sockets into the actor's TorchScript policy:
    the actor holds the bf16 rounding of the learner's weights, and acts with it."""
    cfg = resolve(RunConfig())
    agent = cfg.agent.__class__(**{**cfg.agent.__dict__, "encoder": "state", "hidden_dim": 32})
    sac = SAC(agent, (6, 84, 84), 2, "cpu", state_dim=5)
    flat, layout = policy_weights(sac)
    ctx = zmq.Context()
    try:
        pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://127.0.0.1:{pub.bind_to_random_port('tcp://127.0.0.1')}")
        caster = Broadcaster(pub, run=1, bf16=True)
        while True:  # until the subscription is in place
            caster.publish_weights(sac, 2)
            if sub.poll(100):
                break
        msg = P.decode(sub.recv_multipart())
    finally:
        ctx.destroy(linger=0)
    assert "weights_bf16" in msg.arrays and msg.version == 2
    policy = ActorPolicy(1, 2, 0, agent.frame_stack)
    policy.load_policy(np.frombuffer(script_to_bytes(export_policy(sac)), np.uint8), flat, layout,
                       1, False)
    policy.apply_weights(msg.version, P.weights_of(msg), msg.meta["layout"], random=False)
    held = flat_weights(policy.module)[0]
    assert np.array_equal(held, from_bf16(to_bf16(flat)))
    assert policy.version == 2 and not np.array_equal(held, flat)
    assert np.all(np.abs(held - flat) <= np.abs(flat) * 2**-8)  # the learner's, to bf16 precision


def test_an_actor_and_an_evaluator_load_bf16_weights_messages() -> None:
    """The actor loop and the evaluator loop, over real sockets to a fake learner: a bf16 weights
    message becomes their policy's weights, rounded (and its version)."""
    learner = FakeLearner(random=True)
    try:
        thread, result = _run_actor(learner, steps=10**6)
        _, _, evaluator = _start(learner)
        actor = result["loop"]
        learner.pump(lambda f: all(getattr(loop, "policy", None) is not None and loop.policy.ready
                                   for loop in (actor, evaluator)))  # set once they run
        learner.publish_weights(3, scale=0.7, bf16=True)
        learner.pump(lambda f: actor.policy.version == 3 and evaluator.policy.version == 3)
        rounded = from_bf16(to_bf16(learner.flat))
        assert not np.array_equal(rounded, learner.flat)
        for policy in (actor.policy, evaluator.policy):
            held = flat_weights(policy.module)[0]
            assert np.array_equal(held, rounded)
            assert np.all(np.abs(held - learner.flat) <= np.abs(learner.flat) * 2**-8)
        learner.publish(P.stop_message(learner.seq, 3))
        learner.pump(lambda f: not thread.is_alive())
    finally:
        learner.close()


def test_a_learner_with_weights_wire_bf16_broadcasts_bf16_weights(tmp_path) -> None:
    """The learner service end to end (a scripted actor + evaluator over loopback): every weights
    broadcast carries bf16, the policy messages f32, and the run ends normally."""
    port = free_port_pair()
    cfg = tiny_config(str(tmp_path / "run"), port, 400)
    cfg = dataclasses.replace(cfg, learner=dataclasses.replace(cfg.learner, weights_wire="bf16",
                                                               save_replay=False))
    service = LearnerService(cfg, tensorboard=False, console=False)
    thread, code = start(service)
    ctx = zmq.Context()
    try:
        actor = FakeActor(ctx, port, actor=1, evaluator_id=0)
        actor.hello_until_policy()
        actor.run_until_stop(timeout_s=120)
        thread.join(60)
    finally:
        ctx.destroy(linger=0)
    assert code == [0]
    weights = [m for m in actor.received if m.kind == P.WEIGHTS]
    policies = [m for m in actor.received if m.kind == P.POLICY]
    assert weights and policies
    assert all(set(m.arrays) == {"weights_bf16"} for m in weights)
    assert all("weights" in m.arrays for m in policies)


def test_the_serial_runner_acts_with_bf16_weights_when_asked(monkeypatch) -> None:
    """deploy/serial.py with --weights-wire bf16 acts as the service's actors would: every
    weights load is of bf16 values (fixed points of the rounding), not the learner's f32."""
    from deploy.serial import run_serial, tiny_config
    loaded: list[np.ndarray] = []
    apply = ActorPolicy.apply_weights

    def recording(self, version, flat, layout, random=False):
        loaded.append(np.array(flat, np.float32))
        return apply(self, version, flat, layout, random)
    monkeypatch.setattr(ActorPolicy, "apply_weights", recording)
    cfg = tiny_config(seed=0)
    cfg = dataclasses.replace(cfg, learner=dataclasses.replace(cfg.learner, weights_every=5,
                                                               weights_wire="bf16"))
    run_serial(cfg, agent_steps=cfg.replay.initial_random_steps + 12, eval_every=10**6,
               eval_episodes=1, log=lambda _: None)
    assert len(loaded) >= 2
    for w in loaded:
        assert np.array_equal(from_bf16(to_bf16(w)), w) and np.any(w != 0)
