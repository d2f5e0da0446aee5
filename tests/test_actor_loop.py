"""ActorPolicy caches, StreamSender chunks, and one ActorLoop against the fake learner (point_reach)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from actors.actor_loop import ActorLoop
from actors.envs import make_vec_env
from actors.policy import ActorPolicy
from actors.sender import StreamSender
from fpac_async.wire import protocol as P
from fpac_async.config import EnvConfig, RunConfig, resolve
from fpac_async.agent.export import script_from_bytes
from fpac_async.settings import run_settings
from test_actor_service import FakeLearner, tiny_policy

ENV = resolve(RunConfig(env=EnvConfig(task="point_reach", envs_per_actor=2))).env


def loaded_policy(num_envs: int, random: bool = False) -> ActorPolicy:
    script, flat, layout = tiny_policy()
    policy = ActorPolicy(num_envs, 2, seed=0)
    policy.load_policy(np.frombuffer(script, np.uint8), flat, layout, version=3, random=random)
    return policy


def test_fpac_point_cache_matches_forward_on_the_stack():
    policy = loaded_policy(2)
    module = script_from_bytes(tiny_policy()[0])
    module.load_state_dict(policy.module.state_dict())
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8) for _ in range(3)]
    flags = [np.array([P.FIRST, P.FIRST], np.uint8), np.zeros(2, np.uint8),
             np.array([P.FIRST, 0], np.uint8)]  # env 0 restarts at step 2
    previous = {0: frames[0], 1: frames[0]}
    for t in range(3):
        got = policy.act(frames[t], flags[t], deterministic=True)
        stack = np.empty((2, 6, 32, 32), np.uint8)
        for e in range(2):
            prev = frames[t][e] if flags[t][e] & P.FIRST else previous[e][e]
            stack[e] = np.concatenate([prev, frames[t][e]])  # oldest first, o_{t-1} := o_t at FIRST
        want = module(torch.from_numpy(stack), True).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        previous = {0: frames[t], 1: frames[t]}


def test_random_phase_gives_uniform_actions_and_weights_switch_to_the_policy():
    policy = loaded_policy(64, random=True)
    frames = np.zeros((64, 3, 32, 32), np.uint8)
    a = policy.act(frames, np.full(64, P.FIRST, np.uint8))
    assert a.shape == (64, 2) and a.dtype == np.float32
    assert a.min() >= -1 and a.max() <= 1 and a.min() < -0.5 and a.max() > 0.5
    _, flat, layout = tiny_policy()
    policy.apply_weights(4, flat, layout, random=False)
    d1 = policy.act(frames, np.zeros(64, np.uint8), deterministic=True)
    assert policy.version == 4
    np.testing.assert_allclose(d1, np.broadcast_to(d1[0], d1.shape), rtol=1e-5)  # same frames
    with pytest.raises(ValueError):
        policy.apply_weights(5, flat[:-1], layout)


def test_sender_chunks_carry_seq_step0_and_each_frame_once():
    sent = []
    sender = StreamSender(sent.append, actor_id=3, num_envs=2, obs_shape=(3, 4, 4), action_dim=1,
                          state_dim=0, steps_per_message=3)
    for t in range(7):
        frames = np.full((2, 3, 4, 4), t, np.uint8)
        frames[1] += 100
        sender.add(frames, np.full((2, 1), t, np.float32), np.full(2, t, np.float32),
                   np.zeros(2, np.uint8), version=t // 4, current_version=t // 4)
    sender.flush()
    env0 = [m for m in sent if m.env == 0]
    assert [(m.seq, m.meta["step0"], len(m.arrays["flags"])) for m in env0] == \
        [(0, 0, 3), (1, 3, 3), (2, 6, 1)]
    obs = np.concatenate([m.arrays["obs"] for m in env0])
    assert obs.shape == (7, 3, 4, 4) and list(obs[:, 0, 0, 0]) == list(range(7))
    assert list(np.concatenate([m.arrays["version"] for m in env0])) == [0, 0, 0, 0, 1, 1, 1]
    assert all(m.actor == 3 for m in sent) and sender.records_sent == 14


def _add_records(sender: StreamSender, first: int, count: int, with_cam: bool = True) -> None:
    for t in range(first, first + count):
        frames = np.full((2, 3, 4, 4), t, np.uint8)
        cam = np.full((2, 2), t + 1, np.float32) if with_cam else None
        sender.add(frames, np.full((2, 1), t, np.float32), np.full(2, t, np.float32),
                   np.zeros(2, np.uint8), version=t, cam=cam)


def test_sender_reuses_released_chunks_and_clears_a_reused_cam():
    got = []  # copies, like ZeroMQ copying a frame: the chunk is free again once send returns
    sender = StreamSender(lambda m: got.append({k: v.copy() for k, v in m.arrays.items()}), 0,
                          num_envs=2, obs_shape=(3, 4, 4), action_dim=1, steps_per_message=2)
    _add_records(sender, 0, 4)
    _add_records(sender, 4, 4, with_cam=False)  # no cam: zeros, not the reused chunk's old ones
    assert sender.chunks_allocated == 1 and sender.messages_sent == 8
    env1 = got[1::2]
    assert list(np.concatenate([m["obs"] for m in env1])[:, 0, 0, 0]) == list(range(8))
    assert list(np.concatenate([m["cam"] for m in env1])[:, 0]) == [1, 2, 3, 4, 0, 0, 0, 0]
    assert list(np.concatenate([m["version"] for m in env1])) == list(range(8))


def test_sender_never_reuses_a_chunk_a_message_still_refers_to():
    held = []  # messages kept, like zero-copy frames ZeroMQ has not released yet
    sender = StreamSender(held.append, 0, num_envs=2, obs_shape=(3, 4, 4), action_dim=1,
                          steps_per_message=2)
    _add_records(sender, 0, 6)
    assert sender.chunks_allocated == 4  # 3 sent chunks, all held, plus the one being filled
    del held[:2]  # both env messages of the first chunk are released...
    _add_records(sender, 6, 2)
    assert sender.chunks_allocated == 4  # ...so it is the one reused
    env0 = [m for m in held if m.env == 0]
    assert list(np.concatenate([m.arrays["obs"] for m in env0])[:, 0, 0, 0]) == list(range(2, 8))


def _run_actor(learner: FakeLearner, steps: int, **kw) -> tuple[threading.Thread, dict]:
    result: dict = {}
    kw.setdefault("stats_every_s", 0.5)
    loop = ActorLoop(5, ENV, learner.endpoint, seed=11, steps_per_message=8, **kw)

    def target() -> None:
        result["reason"] = loop.run(max_agent_steps=steps)
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    result["loop"] = loop
    return thread, result


def test_actor_loop_streams_complete_episodes_picks_up_weights_and_ignores_eval():
    learner = FakeLearner(random=True)
    try:
        # 2 envs: 130 agent steps each; stats after every step, so there are many intervals
        thread, result = _run_actor(learner, steps=260, stats_every_s=0.0)
        learner.pump(lambda f: sum(len(m.arrays["flags"]) for m in f.messages[P.STEPS]) >= 40)
        learner.publish_weights(1, scale=0.5)
        # Evaluation is the evaluator processes' job: a training actor never pauses for one,
        # even when the request carries its id.
        learner.publish(P.eval_message(learner.seq, 1, eval_id=9, episodes=3, target_actor=5))
        learner.pump(lambda f: not thread.is_alive())
        thread.join(10)
        learner.drain()  # the actor closed its socket with linger: everything is queued here
    finally:
        learner.close()
    assert result["reason"] == "steps"
    assert not learner.messages[P.EVAL_RESULT]
    # Its hellos carry the run settings the learner checks (fpac_async.settings).
    hello = learner.messages[P.HELLO][0]
    assert hello.meta["role"] == P.ACTOR
    assert hello.meta["settings"] == run_settings(ENV, 2, "fpac")
    # Stats: finished training episodes of 50 steps with per-env ids, and perf figures.
    episodes = [e for m in learner.messages[P.STATS] for e in m.meta.get("episodes", [])]
    assert len(episodes) == 4 and {e["length"] for e in episodes} == {50}
    # Each interval's rate times its wall time is the steps it took: together, all 260.
    perfs = [m.meta["perf"] for m in learner.messages[P.STATS]]
    assert len(perfs) > 100
    assert sum(p["agent_sps"] * p["wall_s"] for p in perfs) == pytest.approx(260)
    assert sum(p["env_sps"] * p["wall_s"] for p in perfs) == pytest.approx(260 * ENV.action_repeat)
    replay = make_vec_env(ENV, seed=11, num_envs=2)  # the actor's env, replayed from records
    streams = learner.records(5)
    records = {}
    for env, msgs in streams.items():
        assert [m.seq for m in msgs] == list(range(len(msgs)))
        step0 = [m.meta["step0"] for m in msgs]
        sizes = [len(m.arrays["flags"]) for m in msgs]
        assert step0 == list(np.cumsum([0] + sizes[:-1]))  # contiguous, nothing lost
        records[env] = {k: np.concatenate([m.arrays[k] for m in msgs]) for k in msgs[0].arrays}
    assert records[0]["flags"].shape == records[1]["flags"].shape == (133,)  # + 3 FIRST
    for env in (0, 1):
        r = records[env]
        firsts = np.flatnonzero(r["flags"] & P.FIRST)
        truncs = np.flatnonzero(r["flags"] & P.TRUNCATED)
        assert list(firsts) == [0, 51, 102] and list(truncs) == [50, 101]  # FIRST after TRUNCATED
        assert not np.any(r["flags"] & P.TERMINAL)
        versions = r["version"]
        assert np.all(np.diff(versions) >= 0) and versions[0] == 0 and versions[-1] == 1
    # The records rebuild the stream exactly: replaying their actions gives the same frames.
    batch = replay.reset()
    np.testing.assert_array_equal(batch.frames, np.stack([records[e]["obs"][0] for e in (0, 1)]))
    for j in range(1, 133):
        batch = replay.step(np.stack([records[e]["action"][j] for e in (0, 1)]))
        for e in (0, 1):
            np.testing.assert_array_equal(batch.frames[e], records[e]["obs"][j])
            assert batch.flags[e] == records[e]["flags"][j]
            assert batch.reward[e] == records[e]["reward"][j]


def test_refuse_for_this_actor_ends_it_as_refused():
    learner = FakeLearner(random=True)
    try:
        thread, result = _run_actor(learner, steps=10**6)
        learner.pump(lambda f: len(f.messages[P.STEPS]) >= 1)
        # Another actor's refusal, and an evaluator's with this id, leave it running.
        learner.publish(P.refuse_message(learner.seq, 0, 4, P.ACTOR, "not you"))
        learner.publish(P.refuse_message(learner.seq, 0, 5, P.EVALUATOR, "not you either"))
        n = len(learner.messages[P.STEPS])
        learner.pump(lambda f: len(f.messages[P.STEPS]) >= n + 3)
        assert thread.is_alive()
        learner.publish(P.refuse_message(learner.seq, 0, 5, P.ACTOR, "--frame-stack 3"))
        learner.pump(lambda f: not thread.is_alive())
    finally:
        learner.close()
    assert result["reason"] == "refused"


def test_stop_from_the_learner_ends_the_loop():
    """A `stop` broadcast ends a running loop with reason 'stop' (the supervisor's "done, do not
    restart"); its last records are flushed before it returns."""
    learner = FakeLearner(random=True)
    try:
        thread, result = _run_actor(learner, steps=10**6)
        learner.pump(lambda f: len(f.messages[P.STEPS]) >= 2)
        for _ in range(10):  # PUB may drop one: publish again until the loop ends
            if not thread.is_alive():
                break
            learner.publish(P.stop_message(learner.seq, 0))
            n = len(learner.messages[P.STEPS])
            learner.pump(lambda f: not thread.is_alive() or len(f.messages[P.STEPS]) > n + 4)
        thread.join(10)
    finally:
        result["loop"]._stop = True
        learner.close()
        thread.join(10)
    assert result["reason"] == "stop"


# ---------------------------------------------------------------- overlapped lanes (ActorLoop)
def _streams(learner: FakeLearner, actor: int) -> dict[int, dict[str, np.ndarray]]:
    """Each env's records, after checking its chunks are in order and contiguous."""
    records = {}
    for env, msgs in learner.records(actor).items():
        assert [m.seq for m in msgs] == list(range(len(msgs)))
        sizes = [len(m.arrays["flags"]) for m in msgs]
        assert [m.meta["step0"] for m in msgs] == list(np.cumsum([0] + sizes[:-1]))
        records[env] = {k: np.concatenate([m.arrays[k] for m in msgs]) for k in msgs[0].arrays}
    return records


def _assert_replays(env_cfg, seed: int, records: dict[int, dict[str, np.ndarray]]) -> None:
    """One VecEnv of all the envs (env i: seed + i) stepped with the recorded actions rebuilds
    every recorded frame, flag and reward: the lanes kept the ids and seeds of that VecEnv."""
    n = env_cfg.envs_per_actor
    length = len(records[0]["flags"])
    replay = make_vec_env(env_cfg, seed=seed, num_envs=n)
    batch = replay.reset()
    for j in range(length):
        if j:
            batch = replay.step(np.stack([records[e]["action"][j] for e in range(n)]))
        for e in range(n):
            np.testing.assert_array_equal(batch.frames[e], records[e]["obs"][j])
            assert batch.flags[e] == records[e]["flags"][j]
            assert batch.reward[e] == records[e]["reward"][j]
    replay.close()


def test_overlapped_lanes_stream_every_env_in_order_replay_exactly_and_take_weights():
    learner = FakeLearner(random=True)
    try:
        thread, result = _run_actor(learner, steps=260, overlap=True)  # 2 lanes of 1 env
        learner.pump(lambda f: sum(len(m.arrays["flags"]) for m in f.messages[P.STEPS]) >= 40)
        # Zero weights but log-std biases of -10: |action| = |tanh(4.5e-5 eps)| < 0.1.
        learner.publish_weights(1, scale=0.0, log_std_bias=-10.0)
        learner.pump(lambda f: not thread.is_alive())
        thread.join(10)
        learner.drain()
    finally:
        learner.close()
    assert result["reason"] == "steps" and result["loop"].overlap
    records = _streams(learner, 5)
    assert sorted(records) == [0, 1]
    for e in (0, 1):
        r = records[e]
        assert r["flags"].shape == (133,)  # 130 agent steps + 3 FIRST, nothing lost
        assert list(np.flatnonzero(r["flags"] & P.FIRST)) == [0, 51, 102]
        # Both lanes switch to version 1 and leave the random phase: every action chosen by the
        # zero weights is tiny, while the uniform random phase had large ones.
        v = r["version"]
        assert np.all(np.diff(v) >= 0) and v[0] == 0 and v[-1] == 1
        acting = (r["flags"] & P.FIRST) == 0
        assert np.abs(r["action"][acting & (v == 1)]).max() < 0.1
        assert np.abs(r["action"][acting & (v == 0)]).max() > 0.5
    _assert_replays(ENV, 11, records)
    # Stats count the episodes of both lanes under their env ids.
    episodes = [e for m in learner.messages[P.STATS] for e in m.meta.get("episodes", [])]
    assert sorted(e["env"] for e in episodes) == [0, 0, 1, 1]


def test_three_envs_split_into_uneven_lanes_keep_ids_and_seeds():
    env3 = resolve(RunConfig(env=EnvConfig(task="point_reach", envs_per_actor=3))).env
    learner = FakeLearner(random=False)
    try:
        loop = ActorLoop(2, env3, learner.endpoint, seed=40, steps_per_message=8,
                         stats_every_s=0.5, overlap=True)
        result: dict = {}
        thread = threading.Thread(target=lambda: result.update(reason=loop.run(
            max_agent_steps=3 * 60)), daemon=True)
        thread.start()
        learner.pump(lambda f: not thread.is_alive())
        thread.join(10)
        learner.drain()
    finally:
        learner.close()
    assert result["reason"] == "steps"
    records = _streams(learner, 2)
    assert sorted(records) == [0, 1, 2]
    assert all(r["flags"].shape == (62,) for r in records.values())  # 60 steps + 2 FIRST
    _assert_replays(env3, 40, records)


def test_overlap_needs_two_envs_and_is_on_by_default_only_for_dmc():
    learner = FakeLearner()
    try:
        one = resolve(RunConfig(env=EnvConfig(task="point_reach", envs_per_actor=1))).env
        with pytest.raises(ValueError, match="envs_per_actor >= 2"):
            ActorLoop(0, one, learner.endpoint, seed=0, overlap=True)
        assert not ActorLoop(0, ENV, learner.endpoint, seed=0).overlap  # numpy: nothing to hide
        dmc2 = resolve(RunConfig(env=EnvConfig(task="cartpole_swingup", envs_per_actor=2))).env
        assert ActorLoop(0, dmc2, learner.endpoint, seed=0).overlap
        assert not ActorLoop(0, dmc2, learner.endpoint, seed=0, overlap=False).overlap
        envpool2 = resolve(RunConfig(env=EnvConfig(task="cartpole_swingup", backend="envpool",
                                                   envs_per_actor=2))).env
        assert not ActorLoop(0, envpool2, learner.endpoint, seed=0).overlap
    finally:
        learner.close()


def test_a_policy_that_cannot_be_loaded_is_rejected_and_the_held_one_kept():
    """Garbage TorchScript bytes (or weights that do not fit) in a `policy` broadcast: the actor
    counts a reject and keeps acting with the policy it holds, instead of crashing (and
    crash-looping on every re-publish)."""
    learner = FakeLearner(random=False)
    try:
        thread, result = _run_actor(learner, steps=10**6)
        learner.pump(lambda f: len(f.messages[P.STEPS]) >= 2)
        loop = result["loop"]
        held = loop.policy.module
        _, flat, layout = tiny_policy()
        misfit = [["renamed", layout[0][1]], *layout[1:]]  # valid on the wire, not for the module
        for script, lay in ((b"not TorchScript", layout), (tiny_policy(seed=1)[0], misfit)):
            n = len(learner.messages[P.STEPS])
            learner.pump(lambda f: len(f.messages[P.STEPS]) > n + 8)  # earlier ones handled
            before = loop.rejects.counts.get("garbage", 0)
            while loop.rejects.counts.get("garbage", 0) == before:  # PUB may drop: again
                learner.publish(P.policy_message(learner.seq, 9, script, flat, lay))
                n = len(learner.messages[P.STEPS])
                learner.pump(lambda f: len(f.messages[P.STEPS]) > n)
            assert thread.is_alive() and loop.policy.module is held
        n = len(learner.messages[P.STEPS])
        learner.pump(lambda f: len(f.messages[P.STEPS]) >= n + 4)
        assert thread.is_alive() and loop.policy.module is held and loop.policy.version == 0
        assert loop.rejects.counts.get("garbage", 0) >= 2  # both kinds (re-publishes count too)
    finally:
        loop._stop = True
        learner.close()
        thread.join(10)


def test_the_actors_data_socket_keeps_the_services_short_queue():
    """README "The service": 2 messages queued in ZeroMQ, a 64 KiB kernel send buffer (records
    in flight are policy lag). The socket a running ActorLoop really sends on is checked."""
    import zmq  # noqa: PLC0415

    learner = FakeLearner(random=True)
    try:
        thread, result = _run_actor(learner, steps=10**6)
        learner.pump(lambda f: len(f.messages[P.STEPS]) >= 1)
        push = result["loop"].push
        assert push.getsockopt(zmq.SNDHWM) == 2
        assert push.getsockopt(zmq.SNDBUF) == 64 * 2**10
    finally:
        result["loop"]._stop = True
        learner.close()
        thread.join(10)


def test_an_actor_whose_hello_could_not_be_sent_says_hello_once_connected():
    """The policy can reach an actor before its data socket connects (the learner's start-up
    broadcast; a CURVE handshake on the data port finishing later): that policy answered no
    hello of this actor, and the learner refuses steps until it has one."""
    import time  # noqa: PLC0415

    import zmq  # noqa: PLC0415

    from fpac_async.wire.transport import pull_socket  # noqa: PLC0415
    learner = FakeLearner(random=True)
    learner.pull.close(linger=0)  # the data port is not there yet
    loop = ActorLoop(5, ENV, learner.endpoint, seed=11, steps_per_message=8,
                     silence_hello_s=1e9)  # no hello after a silence: only the owed one
    result: dict = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("r", loop.run(max_agent_steps=10**6)), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not (getattr(loop, "policy", None) is not None and loop.policy.ready):
            assert time.monotonic() < deadline, "the actor never got the policy"
            learner.publish_policy()  # unasked, like a learner's start-up broadcast
            time.sleep(0.2)
        learner.pull = pull_socket(learner.ctx, f"tcp://127.0.0.1:{learner.port}")
        learner._poller = zmq.Poller()
        learner._poller.register(learner.pull, zmq.POLLIN)
        learner._poller.register(learner.control, zmq.POLLIN)
        learner.pump(lambda f: len(f.messages[P.HELLO]) >= 1, timeout_s=30)
        assert learner.messages[P.HELLO][0].actor == 5
    finally:
        loop._stop = True
        thread.join(30)
        learner.close()
