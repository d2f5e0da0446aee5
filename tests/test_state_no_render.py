"""State runs at physics speed: encoders that need no pixels never render, send or store frames.

Envs made with render=False make no render call (no GL camera at all on dmc) and return the same
physics as rendering envs; steps messages without `obs` round-trip and their hostile variants are
rejected; the learner's receiver refuses frames it does not expect (and the reverse); a replay
with pixels=False allocates no frame bytes, says so, and samples exact state / next_state
batches on which SAC's state encoder trains; an ActorLoop with render=False streams state-only
records of a real DMC task that replay exactly and answers evaluations.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from actors.actor_loop import ActorLoop
from actors.envs import FIRST, TERMINAL, TRUNCATED, VecEnv, make_vec_env
from actors.policy import ActorPolicy
from actors.sender import StreamSender
from fpac_async.wire import protocol as P
from fpac_async.agent.batch import Batch
from fpac_async.config import AgentConfig, EnvConfig, RunConfig, resolve
from fpac_async.agent.export import export_policy, flat_weights, script_from_bytes, script_to_bytes
from fpac_async.agent.sac import SAC
from learner.receiver import Receiver, TaskShapes
from learner.replay import Replay
from test_actor_service import FakeLearner

STATE_AGENT = AgentConfig(encoder="state", hidden_dim=32, hidden_layers=1, batch_size=16)


def env_cfg(task: str, **kw) -> EnvConfig:
    return resolve(RunConfig(env=EnvConfig(task=task, **kw))).env


def rand_actions(rng: np.random.Generator, n: int, a: int) -> np.ndarray:
    return rng.uniform(-1, 1, (n, a)).astype(np.float32)


def state_policy(action_dim: int, state_dim: int, seed: int = 0) -> tuple[bytes, np.ndarray, list]:
    torch.manual_seed(seed)
    module = export_policy(SAC(STATE_AGENT, (6, 16, 16), action_dim, state_dim=state_dim))
    flat, layout = flat_weights(module)
    return script_to_bytes(module), flat, [[n, list(s)] for n, s in layout]


# ---------------------------------------------------------------- envs
def test_dmc_without_render_makes_no_camera_and_steps_the_same_physics(monkeypatch):
    from actors.envs import dmc
    cfg = env_cfg("cartpole_swingup", image_size=16)
    rendering = make_vec_env(cfg, seed=4, num_envs=2)
    renders = []
    original = dmc.Camera.render
    monkeypatch.setattr(dmc.Camera, "render", lambda self, *a, **k: (renders.append(1),
                                                                      original(self, *a, **k))[1])
    made = []
    original_init = dmc.Camera.__init__
    monkeypatch.setattr(dmc.Camera, "__init__",
                        lambda self, *a, **k: (made.append(1), original_init(self, *a, **k))[1])
    blind = make_vec_env(cfg, seed=4, num_envs=2, render=False)
    assert not blind.renders and rendering.renders and not blind.provides_cam
    assert blind.obs_shape == (3, 16, 16) and blind.state_dim == 5
    a, b = rendering.reset(), blind.reset()
    renders.clear()
    made.clear()
    assert b.frames is None and a.frames.shape == (2, 3, 16, 16)
    np.testing.assert_array_equal(a.state, b.state)
    rng = np.random.default_rng(0)
    for _ in range(130):  # through a truncation (125 agent steps) and the FIRST after it
        act = rand_actions(rng, 2, 1)
        before = len(renders)
        b = blind.step(act)
        assert len(renders) == before and not made  # the blind env never renders
        a = rendering.step(act)
        assert b.frames is None
        np.testing.assert_array_equal(a.state, b.state)
        np.testing.assert_array_equal(a.reward, b.reward)
        np.testing.assert_array_equal(a.flags, b.flags)
        np.testing.assert_array_equal(b.cam, 0.0)
    assert len(renders) == 130 * 2  # only the rendering env rendered: one per agent step
    assert blind._cameras == [None, None]  # no GL camera (or context) was ever made
    rendering.close()
    blind.close()


def test_point_reach_without_render_never_draws(monkeypatch):
    from actors.envs.point_reach import PointReachVecEnv
    cfg = env_cfg("point_reach")
    rendering = make_vec_env(cfg, seed=2, num_envs=3)
    calls = []
    original = PointReachVecEnv._render
    monkeypatch.setattr(PointReachVecEnv, "_render",
                        lambda self, ids: (calls.append(1), original(self, ids))[1])
    blind = make_vec_env(cfg, seed=2, num_envs=3, render=False)
    a, b = rendering.reset(), blind.reset()
    calls.clear()
    rng = np.random.default_rng(1)
    for _ in range(60):
        act = rand_actions(rng, 3, 2)
        before = len(calls)
        b = blind.step(act)
        assert len(calls) == before  # the blind env never draws
        a = rendering.step(act)
        assert b.frames is None
        np.testing.assert_array_equal(a.state, b.state)
        np.testing.assert_array_equal(a.flags, b.flags)
        np.testing.assert_array_equal(a.reward, b.reward)
    assert len(calls) == 60  # the rendering env drew once per step


def test_envpool_without_render_never_calls_render():
    pytest.importorskip("envpool")
    cfg = env_cfg("cartpole_swingup", backend="envpool", image_size=16)
    blind = make_vec_env(cfg, seed=0, num_envs=2, render=False)

    class Spy:  # forwards to envpool's env, counting render calls
        def __init__(self, env) -> None:
            self.env, self.renders = env, 0

        def render(self, *a, **k):
            self.renders += 1
            return self.env.render(*a, **k)

        def __getattr__(self, name):
            return getattr(self.env, name)

    blind._env = spy = Spy(blind._env)
    b = blind.reset()
    rng = np.random.default_rng(0)
    for _ in range(10):
        b = blind.step(rand_actions(rng, 2, 1))
        assert b.frames is None and b.state.shape == (2, 5)
    assert spy.renders == 0
    blind.close()


def test_an_env_that_does_not_render_must_provide_state():
    class NoState(VecEnv):
        num_envs, obs_shape, action_dim, state_dim, action_repeat = 1, (3, 2, 2), 1, 0, 1
        renders = False

        def _reset_envs(self, ids, out):
            pass

        def _step_envs(self, ids, actions, out):
            pass

    with pytest.raises(ValueError, match="must provide state"):
        NoState()


# ---------------------------------------------------------------- wire format
def state_steps(n: int = 5, d: int = 3, **over) -> P.Message:
    flags = np.zeros(n, np.uint8)
    flags[0] = P.FIRST
    kw = dict(obs=None, action=np.ones((n, 2), np.float32), reward=np.arange(n, dtype=np.float32),
              flags=flags, version=np.full(n, 7, np.int32), cam=np.zeros((n, 2), np.float32),
              state=np.arange(n * d, dtype=np.float32).reshape(n, d))
    kw.update(over)
    return P.steps_message(3, 1, 0, 10, **kw)


def test_steps_without_frames_round_trip_and_carry_no_frame_bytes():
    msg = state_steps()
    frames = P.encode(msg)
    assert sum(memoryview(f).nbytes for f in frames[1:]) == 5 * (2 * 4 + 4 + 1 + 4 + 2 * 4 + 3 * 4)
    back = P.decode([bytes(f) for f in frames])
    assert "obs" not in back.arrays and back.meta == {"step0": 10}
    for name, arr in msg.arrays.items():
        np.testing.assert_array_equal(back.arrays[name], arr)


def test_hostile_steps_without_frames_are_rejected():
    # No frames and no state: nothing to learn from.
    with pytest.raises(P.SchemaError, match="neither obs nor state"):
        P.decode([bytes(f) for f in P.encode(state_steps(state=None))])
    # State of the wrong dtype, or T disagreeing with the other arrays.
    with pytest.raises(P.DtypeError):
        P.decode([bytes(f) for f in P.encode(state_steps(state=np.zeros((5, 3), np.int32)))])
    with pytest.raises(P.SchemaError, match="T="):
        P.decode([bytes(f) for f in P.encode(state_steps(state=np.zeros((4, 3), np.float32)))])
    # A header that lists no obs but one frame too many.
    frames = [bytes(f) for f in P.encode(state_steps())]
    with pytest.raises(P.SchemaError):
        P.decode([*frames, b"\0" * 12])


# ---------------------------------------------------------------- sender
def test_sender_without_frames_sends_state_only():
    sent: list[P.Message] = []
    sender = StreamSender(sent.append, 0, 2, (3, 84, 84), 1, state_dim=5, steps_per_message=4,
                          frames=False)
    assert sender._chunk.obs is None and sender._chunk.nbytes < 2 * 4 * 64  # no 84x84 frames
    for k in range(8):
        sender.add(None, np.full((2, 1), k, np.float32), np.zeros(2, np.float32),
                   np.zeros(2, np.uint8), k, state=np.full((2, 5), k, np.float32))
    assert len(sent) == 4 and all("obs" not in m.arrays for m in sent)
    decoded = [P.decode([bytes(f) for f in P.encode(m)]) for m in sent]
    env0 = np.concatenate([m.arrays["state"] for m in decoded if m.env == 0])
    np.testing.assert_array_equal(env0[:, 0], np.arange(8))
    with pytest.raises(ValueError, match="sends no frames"):
        sender.add(np.zeros((2, 3, 84, 84), np.uint8), np.zeros((2, 1), np.float32),
                   np.zeros(2, np.float32), np.zeros(2, np.uint8), 0,
                   state=np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="needs state"):
        StreamSender(sent.append, 0, 2, (3, 84, 84), 1, state_dim=0, frames=False)


# ---------------------------------------------------------------- receiver
def receiver(expect_frames: bool, replay_add) -> Receiver:
    shapes = TaskShapes("cartpole_swingup", (3, 8, 8), 2, 3)
    r = Receiver(None, shapes, replay_add, lambda steps: True, action_repeat=8,
                 env_step_budget=10**9, max_bytes=P.DEFAULT_MAX_BYTES, expect_state=True,
                 expect_frames=expect_frames, policy_version=7)  # the version state_steps carry
    # Steps count only from actors whose hello was accepted: actor 3 says hello first.
    r.handle([bytes(f) for f in P.encode(P.hello_message(3, "cartpole_swingup", 1, (3, 8, 8), 2,
                                                         state_dim=3))])
    assert not r.rejects.counts
    return r


@pytest.mark.parametrize("real_replay", [False, True])
def test_receiver_rejects_frames_it_does_not_expect_and_the_reverse(real_replay, caplog):
    """With a recording replay_add the receiver's own check is what refuses; with the real
    replays, they refuse too (defence in depth), counted the same way."""
    calls: list[dict] = []
    if real_replay:
        state_add = Replay(64, (3, 8, 8), 2, state_dim=3, pixels=False, batch_size=8).add
        pixel_add = Replay(64, (3, 8, 8), 2, state_dim=3, batch_size=8).add
    else:
        state_add = pixel_add = lambda **kw: calls.append(kw)  # noqa: E731
    with_frames = state_steps(obs=np.zeros((5, 3, 8, 8), np.uint8))
    r = receiver(False, state_add)
    r.handle([bytes(f) for f in P.encode(with_frames)])
    assert r.rejects.counts == {"shape": 1} and r.agent_steps == 0 and not calls
    assert "frames, but this run's encoder needs none" in caplog.text or real_replay
    r.handle([bytes(f) for f in P.encode(state_steps())])
    assert r.rejects.counts == {"shape": 1} and r.agent_steps == 4
    assert real_replay or calls.pop()["obs"] is None

    r = receiver(True, pixel_add)
    r.handle([bytes(f) for f in P.encode(state_steps())])
    assert r.rejects.counts == {"shape": 1} and r.agent_steps == 0 and not calls
    r.handle([bytes(f) for f in P.encode(with_frames)])
    assert r.rejects.counts == {"shape": 1} and r.agent_steps == 4


# ---------------------------------------------------------------- replay and SAC
def state_chunk(g0: int, flags: list[int], d: int = 3) -> dict:
    """Records whose action / reward / state encode their global number g."""
    gs = np.arange(g0, g0 + len(flags))
    return dict(obs=None, action=np.stack([gs, -gs], 1).astype(np.float32),
                reward=(gs + 0.5).astype(np.float32), flags=np.asarray(flags, np.uint8),
                version=gs.astype(np.int32),
                state=np.stack([gs * (k + 1) for k in range(d)], 1).astype(np.float32))


def test_replay_without_frames_allocates_no_frame_bytes_and_says_so():
    kw = dict(capacity=10_000, frame_shape=(3, 84, 84), action_dim=2, state_dim=3,
              batch_size=128)
    blind, pixels = Replay(**kw, pixels=False), Replay(**kw)
    frame_bytes = 10_000 * 3 * 84 * 84 + 2 * 128 * 3 * 3 * 84 * 84  # storage + 2 staging buffers
    assert pixels.nbytes - blind.nbytes == frame_bytes
    assert blind.nbytes < 10_000 * 200  # per-record data and links only
    assert blind._frames_t.nbytes == 0
    assert all(frames.nbytes == 0 for (frames, _), _, _ in blind._staging)
    text = blind.describe()
    assert "no frames" in text and "0 B of frame storage" in text and "3x84x84" not in text
    with pytest.raises(ValueError, match="needs state_dim >= 1"):
        Replay(64, (3, 8, 8), 2, state_dim=0, pixels=False)


def test_replay_without_frames_samples_exact_state_batches_and_refuses_frames():
    replay = Replay(32, (3, 84, 84), 2, state_dim=3, pixels=False, seed=1, batch_size=64)
    with pytest.raises(ValueError, match="stores no frames"):
        replay.add((0, 0), 0, **{**state_chunk(0, [FIRST]), "obs": np.zeros((1, 3, 84, 84),
                                                                           np.uint8)})
    with pytest.raises(ValueError, match="obs uint8"):
        Replay(32, (3, 84, 84), 2, state_dim=3).add((0, 0), 0, **state_chunk(0, [FIRST]))
    # Two interleaved streams, a terminal, a truncation and a wrap-around (capacity 32).
    flags_a = [FIRST, 0, 0, TERMINAL, FIRST, 0, 0, 0, TRUNCATED, FIRST, 0, 0]
    flags_b = [FIRST, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    g, step, stream_of = 0, {0: 0, 1: 0}, {}
    for round_ in range(4):
        for s, flags in ((0, flags_a), (1, flags_b)):
            part = flags[(round_ % 2) * 6:(round_ % 2) * 6 + 6]
            replay.add((0, s), step[s], **state_chunk(g, part))
            for k in range(len(part)):
                stream_of[g + k] = (s, part[k], step[s] + k)
            g, step[s] = g + len(part), step[s] + len(part)
    batch = replay.sample()
    batch.validate(check_overlap=True)
    assert batch.obs.shape == batch.next_obs.shape == (64, 0, 84, 84)
    assert batch.obs.dtype == torch.uint8 and batch.obs.numel() == 0
    gs = batch.state[:, 0].numpy().astype(int)
    nxt = batch.next_state[:, 0].numpy().astype(int)
    np.testing.assert_array_equal(batch.state[:, 2].numpy(), 3 * gs)
    oldest = g - 32
    for gi, ni, a, r, disc in zip(gs, nxt, batch.action.numpy(), batch.reward.numpy(),
                                  batch.discount.numpy()):
        s, _, st = stream_of[gi]
        assert gi >= oldest and stream_of[ni][0] == s and stream_of[ni][2] == st + 1
        assert not stream_of[ni][1] & FIRST  # never across an episode start
        assert a[0] == ni and r == ni + 0.5  # action and reward of the NEXT record
        assert disc == (0.0 if stream_of[ni][1] & TERMINAL else 1.0)
    assert len(set(gs)) > 8
    # Checkpoint round trip, also without frames.
    other = Replay(32, (3, 84, 84), 2, state_dim=3, pixels=False, seed=1, batch_size=64)
    other.load_state_dict(replay.state_dict())
    assert other.num_valid == replay.num_valid
    with pytest.raises(ValueError, match="no frames"):
        other.load_state_dict(Replay(32, (3, 84, 84), 2, state_dim=3).state_dict())


def test_sac_state_encoder_trains_on_batches_without_frames():
    replay = Replay(256, (3, 84, 84), 1, state_dim=5, pixels=False, seed=0, batch_size=16)
    rng = np.random.default_rng(0)
    for c in range(8):
        flags = [FIRST if c == 0 and k == 0 else 0 for k in range(16)]
        replay.add((0, 0), 16 * c, None, rng.uniform(-1, 1, (16, 1)).astype(np.float32),
                   rng.normal(size=16).astype(np.float32), np.asarray(flags, np.uint8),
                   state=rng.normal(size=(16, 5)).astype(np.float32))
    torch.manual_seed(0)
    sac = SAC(STATE_AGENT, (6, 84, 84), 1, state_dim=5)
    params = list(sac.critic.parameters()) + list(sac.actor.parameters())
    before = [p.detach().clone() for p in params]
    for _ in range(3):
        metrics = sac.update(replay.sample())
    assert all(torch.isfinite(v) for v in metrics.values())
    after = params
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
    batch = replay.sample()
    with pytest.raises(ValueError, match="state and next_state are required"):
        Batch(batch.obs, batch.action, batch.reward, batch.discount, batch.next_obs).validate()


# ---------------------------------------------------------------- policy and the actor loop
def test_lanes_of_blind_envs_concatenate_without_frames():
    from actors.stepping import concat_batches
    cfg = env_cfg("point_reach")
    lanes = [make_vec_env(cfg, seed=s, num_envs=n, render=False) for s, n in ((0, 2), (2, 1))]
    batch = concat_batches([env.reset() for env in lanes])
    assert batch.frames is None and batch.state.shape == (3, 4) and batch.flags.shape == (3,)



def test_policy_acts_on_state_alone_and_refuses_a_pixel_policy_without_frames():
    script, flat, layout = state_policy(1, 5)
    policy = ActorPolicy(2, 1, seed=0)
    state = np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32)
    flags = np.array([FIRST, 0], np.uint8)
    random_actions = policy.act(None, flags, None, state)  # no policy yet: uniform random
    assert random_actions.shape == (2, 1)
    policy.load_policy(np.frombuffer(script, np.uint8), flat, layout, version=1, random=False)
    mean = policy.act(None, flags, None, state, deterministic=True)
    module = script_from_bytes(script)
    expected = module.forward(torch.zeros((2, 6, 16, 16), dtype=torch.uint8), True, None,
                              torch.from_numpy(state))
    np.testing.assert_allclose(mean, expected.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="acts on state"):
        policy.act(None, flags, None, None)
    from test_actor_service import tiny_policy  # an fpac policy: it needs pixels
    fpac = ActorPolicy(2, 2, seed=0)
    s2, f2, l2 = tiny_policy()
    fpac.load_policy(np.frombuffer(s2, np.uint8), f2, l2, version=1, random=False)
    with pytest.raises(ValueError, match="needs pixels"):
        fpac.act(None, flags, None, np.zeros((2, 4), np.float32))


def test_actor_loop_of_the_state_encoder_streams_state_records_of_dmc_without_rendering(
        monkeypatch):
    from actors.envs import dmc

    def no_camera(*a, **k):
        raise AssertionError("an actor that does not render made a GL camera")
    monkeypatch.setattr(dmc, "Camera", no_camera)
    cfg = env_cfg("cartpole_swingup", envs_per_actor=2, image_size=16)
    learner = FakeLearner(random=True)
    learner.script, learner.flat, learner.layout = state_policy(1, 5)
    result: dict = {}
    loop = ActorLoop(6, cfg, learner.endpoint, seed=21, steps_per_message=16, stats_every_s=0.5,
                     encoder="state")  # render: what the encoder needs, i.e. no pixels
    assert not loop.render and not loop.overlap  # no lanes: nothing to hide the policy behind
    assert ActorLoop(6, cfg, learner.endpoint, seed=21, encoder="pixels").render
    try:
        thread = threading.Thread(target=lambda: result.update(
            reason=loop.run(max_agent_steps=2 * 140)), daemon=True)
        thread.start()
        learner.pump(lambda f: sum(len(m.arrays["flags"]) for m in f.messages[P.STEPS]) >= 64)
        learner.publish_weights(1)
        learner.pump(lambda f: not thread.is_alive())
        thread.join(10)
        learner.drain()
    finally:
        learner.close()
    assert result["reason"] == "steps" and loop.renderer.startswith("none")
    records = {}
    for env, msgs in learner.records(6).items():
        assert all("obs" not in m.arrays and m.arrays["state"].shape[1] == 5 for m in msgs)
        sizes = [len(m.arrays["flags"]) for m in msgs]
        assert [m.meta["step0"] for m in msgs] == list(np.cumsum([0] + sizes[:-1]))
        records[env] = {k: np.concatenate([m.arrays[k] for m in msgs]) for k in msgs[0].arrays}
    assert sorted(records) == [0, 1]
    for e in (0, 1):
        assert records[e]["flags"].shape == (142,)  # 140 agent steps + 2 FIRST
        assert list(np.flatnonzero(records[e]["flags"] & FIRST)) == [0, 126]
        assert records[e]["version"][-1] == 1
    # The records rebuild the stream: a blind env stepped with their actions gives their states.
    monkeypatch.undo()
    replay = make_vec_env(cfg, seed=21, num_envs=2, render=False)
    batch = replay.reset()
    for j in range(142):
        if j:
            batch = replay.step(np.stack([records[e]["action"][j] for e in (0, 1)]))
        for e in (0, 1):
            np.testing.assert_array_equal(batch.state[e], records[e]["state"][j])
            assert batch.flags[e] == records[e]["flags"][j]
            assert batch.reward[e] == records[e]["reward"][j]
    replay.close()


def test_evaluation_episodes_run_on_an_env_that_does_not_render():
    from actors.evaluator import Evaluator
    cfg = env_cfg("cartpole_swingup", image_size=16)
    script, flat, layout = state_policy(1, 5)
    policy = ActorPolicy(1, 1, seed=0)
    policy.load_policy(np.frombuffer(script, np.uint8), flat, layout, version=2, random=False)
    evaluator = Evaluator(lambda n: make_vec_env(cfg, 500, n, render=False), seed=500)
    returns, lengths = evaluator.run(policy, 3)
    assert lengths == [125, 125, 125] and all(np.isfinite(returns))
    assert not evaluator.open(3).renders
    evaluator.close()
