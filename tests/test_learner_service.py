"""The learner service end to end over REAL ZeroMQ sockets on loopback, on the CPU, tiny settings.

A scripted fake actor (PUSH + SUB, fpac_async.wire.protocol) says hello, gets the TorchScript policy,
streams point_reach-shaped records with FIRST/TRUNCATED boundaries, follows weight broadcasts,
answers evaluation requests on the control socket as an evaluator would, and stops when told.
Then a second learner resumes the run.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Iterator

import msgpack
import numpy as np
import pytest
import torch
import zmq

from fpac_async.wire.transport import free_port_pair
from fpac_async.wire import protocol as P
from fpac_async.config import (AgentConfig, EnvConfig, LearnerConfig, ReplayConfig, RunConfig,
                               load_config, resolve, save_config)
from fpac_async.agent.export import load_flat_weights
from fpac_async.settings import run_settings
from fpac_async.wire.transport import actor_endpoints, actor_sockets, push_socket
from learner import cli
from learner.checkpoint import load_checkpoint
from fpac_async.wire.protocol import STOP
from learner.metrics import REQUIRED_FIELDS
from learner.service import LearnerService

LOOPBACK = "127.0.0.1"
INITIAL = 20
SLACK = 64  # Trainer's default slack_updates
CHUNK = 10  # records per steps message
EPISODE = 50  # point_reach agent steps per episode


def tiny_config(run_dir: str, port: int, env_steps: int) -> RunConfig:
    return RunConfig(
        agent=AgentConfig(hidden_dim=32, num_points=4, conv_channels=8, batch_size=8),
        env=EnvConfig(task="point_reach"),
        replay=ReplayConfig(capacity=1000, initial_random_steps=INITIAL),
        # No lag bound: the ratio checks below are the unbounded stream's (slack + one chunk);
        # a bounded learner also reads past the slack while it waits for fresh records
        # (tests/test_lag_service.py).
        learner=LearnerConfig(bind=f"tcp://{LOOPBACK}:{port}", gpus=0, weights_every=5,
                              checkpoint_every=100, eval_every_env_steps=100, eval_episodes=2,
                              log_every_s=0.2, save_replay=True, max_policy_lag=0),
        env_steps=env_steps, seed=3, run_dir=run_dir)


def tiny_settings(**changes: object) -> dict:
    """The run settings a tiny_config actor sends in its hello (changes: a mismatched actor)."""
    cfg = resolve(tiny_config("unused", 5555, 1))
    return {**run_settings(cfg.env, cfg.agent.frame_stack, cfg.agent.encoder), **changes}


class FakeActor:
    """One actor process's wire behaviour, scripted; with evaluator_id also an evaluator's
    (hello and heartbeats on the control socket, eval requests answered there)."""

    def __init__(self, ctx: zmq.Context, port: int, actor: int = 7,
                 evaluator_id: int | None = None, settings: dict | None = None) -> None:
        self.push, self.sub = actor_sockets(ctx, f"{LOOPBACK}:{port}")
        self.control = None
        if evaluator_id is not None:
            self.control = push_socket(ctx, actor_endpoints(f"{LOOPBACK}:{port}").control)
        self.evaluator_id = evaluator_id
        self.settings = tiny_settings() if settings is None else settings
        self.last_beat = 0.0
        self.actor = actor
        self.version = 0
        self.step = 0  # next record index of stream (actor, env 0)
        self.seq = 0
        self.received: list[P.Message] = []
        self.stopped = False
        self.rng = np.random.default_rng(0)

    def send(self, msg: P.Message, timeout_s: float = 120.0) -> None:
        """Send, draining broadcasts while the learner applies backpressure; nothing once the
        learner said stop. On a loaded machine all four actors of test_lag_service once waited
        22 s together (a 20 s limit failed there), so the limit only catches a hang."""
        deadline = time.monotonic() + timeout_s
        while not self.push.poll(10, zmq.POLLOUT):
            self.drain()
            if self.stopped:
                return
            assert time.monotonic() < deadline, f"the learner stopped reading for {timeout_s} s"
        self.push.send_multipart(P.encode(msg))

    def hello_until_policy(self, timeout_s: float = 20.0) -> P.Message:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.send(P.hello_message(self.actor, "point_reach", os.getpid(), (3, 32, 32), 2,
                                      role=P.ACTOR, settings=self.settings))
            if self.control is not None:
                self.control.send_multipart(P.encode(P.hello_message(
                    self.evaluator_id, "point_reach", os.getpid(), (3, 32, 32), 2,
                    role=P.EVALUATOR, settings=self.settings)))
            for msg in self.drain(wait_ms=200):
                if msg.kind == P.POLICY:
                    return msg
        raise AssertionError("no policy within 20 s of hellos")

    def drain(self, wait_ms: int = 0) -> list[P.Message]:
        """Every broadcast waiting on SUB: follow weights, answer evals, note stop."""
        got = []
        if self.control is not None and time.monotonic() - self.last_beat > 0.5:
            self.last_beat = time.monotonic()
            self.control.send_multipart(P.encode(P.heartbeat_message(
                self.evaluator_id, 0, self.version, False, settings=self.settings)))
        while self.sub.poll(wait_ms, zmq.POLLIN):
            wait_ms = 0
            frames = self.sub.recv_multipart()
            if msgpack.unpackb(frames[0]).get("kind") == STOP:  # protocol may not know it yet
                self.stopped = True
                continue
            msg = P.decode(frames)
            got.append(msg)
            self.received.append(msg)  # here: send() below may drain re-entrantly
            if msg.kind in (P.POLICY, P.WEIGHTS):
                self.version = msg.version
            elif msg.kind == P.EVAL and msg.meta["target_actor"] == self.evaluator_id:
                n = msg.meta["episodes"]
                self.control.send_multipart(P.encode(P.eval_result_message(
                    self.evaluator_id, 0, msg.meta["eval_id"], [1.0 + i for i in range(n)],
                    [EPISODE] * n, self.version, wall_s=0.1)))
        return got

    def send_chunk(self) -> None:
        j = np.arange(self.step, self.step + CHUNK)
        flags = np.where(j % (EPISODE + 1) == 0, P.FIRST,
                         np.where(j % (EPISODE + 1) == EPISODE, P.TRUNCATED, 0)).astype(np.uint8)
        obs = self.rng.integers(0, 256, (CHUNK, 3, 32, 32), dtype=np.uint8)
        action = self.rng.uniform(-1, 1, (CHUNK, 2)).astype(np.float32)
        reward = -self.rng.uniform(0, 1, CHUNK).astype(np.float32)
        version = np.full(CHUNK, self.version, np.int32)
        self.send(P.steps_message(self.actor, 0, self.seq, self.step, obs, action, reward, flags,
                                  version, cam=np.zeros((CHUNK, 2), np.float32)))
        if np.any(flags & P.TRUNCATED):
            self.send(P.stats_message(self.actor, self.seq, [{"return": -10.0, "length": EPISODE,
                                                              "env": 0}], {"env_sps": 100.0}))
        self.step += CHUNK
        self.seq += 1

    def run_until_stop(self, timeout_s: float = 25.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.stopped:
            assert time.monotonic() < deadline, "no stop within 25 s"
            self.send_chunk()
            self.drain()


def start(service: LearnerService) -> tuple[threading.Thread, list[int]]:
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(service.run()), daemon=True)
    thread.start()
    assert service.ready.wait(20) or code, "the learner did not start"
    return thread, code


def rows(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_run_then_resume(tmp_path, ctx: zmq.Context, monkeypatch, caplog) -> None:
    run_dir = str(tmp_path / "run")
    port = free_port_pair()
    service = LearnerService(tiny_config(run_dir, port, env_steps=200), tensorboard=False,
                             console=False, eval_timeout_s=10, final_eval_timeout_s=10)
    thread, code = start(service)
    actor = FakeActor(ctx, port, evaluator_id=0)
    policy = actor.hello_until_policy()
    assert policy.version == 0 and policy.meta["random"] is True
    script = torch.jit.load(io.BytesIO(policy.arrays["script"].tobytes()))
    load_flat_weights(script, policy.arrays["weights"].copy(), policy.meta["layout"])
    obs = torch.zeros(1, 6, 32, 32, dtype=torch.uint8)
    action = script(obs, True)
    assert action.shape == (1, 2) and torch.equal(action, script(obs, True))  # the mean
    assert not torch.equal(action, script(obs, False))  # the actors' path samples

    actor.run_until_stop()
    thread.join(20)
    assert code == [0]

    weights = [m.version for m in actor.received if m.kind == P.WEIGHTS]
    # Version 1 comes at the end of the random phase; then increasing (PUB may drop some; the
    # newest is published again while the lag bound waits for it in the records for over 1 s).
    assert weights[0] == 1 and weights == sorted(weights) and len(set(weights)) > 2
    for m in actor.received:
        if m.kind == P.WEIGHTS:
            load_flat_weights(script, m.arrays["weights"].copy(), m.meta["layout"])
    evals = [m for m in actor.received if m.kind == P.EVAL]
    assert evals and all(m.meta["target_actor"] == actor.evaluator_id for m in evals)

    table = rows(run_dir)
    for row in table:
        assert set(REQUIRED_FIELDS) <= set(row)
        # The ratio is enforced: never more updates than owed, never more than slack + one
        # message behind (the receiver checks admission before each message).
        assert row["updates"] <= max(0, row["agent_steps"] - INITIAL)
        assert row["agent_steps"] - INITIAL - row["updates"] <= SLACK + CHUNK
        assert row["rejected_messages"] == 0
    last = table[-1]
    assert 200 <= last["env_steps"] < 200 + CHUNK  # steps past the budget are dropped
    assert last["agent_steps"] == last["env_steps"]  # point_reach: action repeat 1
    assert last["updates"] == last["agent_steps"] - INITIAL  # every owed update ran at the end
    assert last["episodes"] == last["agent_steps"] // EPISODE
    assert last["eval_return"] == pytest.approx(1.5)  # answers were [1, 2]
    assert last["train_return"] == pytest.approx(-10.0)
    assert last["policy_version"] == weights[-1] and last["critic_loss"] is not None
    # Each evaluation sits at the env steps of the version it evaluated (the fake evaluator
    # answers with the version it holds): the final one at the final weights' env steps.
    eval_rows = [r for r in table if "eval_env_steps" in r]
    evaluated = [(r["eval_env_steps"], r["eval_version"]) for r in eval_rows]
    assert evaluated[-1] == (last["env_steps"], last["policy_version"])
    assert eval_rows[-1]["eval_final"] and not any(r["eval_final"] for r in eval_rows[:-1])
    with open(os.path.join(run_dir, "evals.jsonl")) as f:
        evals_file = [json.loads(line) for line in f]
    assert [(e["env_steps"], e["version"]) for e in evals_file] == evaluated
    assert evals_file[-1]["final"] and evals_file[-1]["returns"] == [1.0, 2.0]
    assert load_config(os.path.join(run_dir, "config.json")).env.task == "point_reach"
    assert os.path.exists(os.path.join(run_dir, "checkpoints", "latest"))
    saved = torch.jit.load(os.path.join(run_dir, "policy.pt"))
    assert saved(torch.zeros(2, 6, 32, 32, dtype=torch.uint8), True).shape == (2, 2)

    # Resume with a larger budget: counters, version and the replay carry on.
    saved_replay = load_checkpoint(run_dir)["replay"]  # save_replay=True
    assert len(saved_replay["frames"]) == last["replay_size"] >= 200
    port = free_port_pair()
    hashed: list = []  # at INFO the resume does not hash the whole replay (only at DEBUG)
    monkeypatch.setattr("learner.run_state.state_digest", lambda state: hashed.append(1) or "")
    caplog.set_level(logging.INFO)
    resumed = LearnerService(tiny_config(run_dir, port, env_steps=300), resume=True,
                             tensorboard=False, console=False, final_eval_timeout_s=10)
    thread, code = start(resumed)
    assert hashed == [] and "replay restored" in caplog.text
    # Before any actor sends: the replay came back whole (frames, actions, flags, stream index).
    back = resumed.replay.state_dict()
    assert len(resumed.replay) == last["replay_size"] and not resumed.trainer.refilling
    for key in ("frames", "action", "reward", "flags", "version"):
        np.testing.assert_array_equal(back[key], saved_replay[key])
    actor2 = FakeActor(ctx, port, actor=8, evaluator_id=1)
    policy = actor2.hello_until_policy()
    assert policy.version == last["policy_version"] and policy.meta["random"] is False
    actor2.run_until_stop()
    thread.join(20)
    assert code == [0]
    after = rows(run_dir)[len(table):]
    assert after[0]["agent_steps"] >= last["agent_steps"]
    assert after[0]["updates"] >= last["updates"]
    final = after[-1]
    assert 300 <= final["env_steps"] < 300 + CHUNK
    assert final["updates"] == final["agent_steps"] - INITIAL
    assert final["policy_version"] > last["policy_version"]
    # The schedule goes on from the checkpoint (next at 300), not from 0 (an evaluation asked
    # for at once, for the points the first learner already passed).
    with open(os.path.join(run_dir, "evals.jsonl")) as f:
        resumed_evals = [json.loads(line) for line in f][len(evals_file):]
    assert resumed_evals[-1]["final"], resumed_evals
    assert min(e["requested_env_steps"] for e in resumed_evals) >= 300, resumed_evals


def test_resume_without_replay_refills_and_finishes_even_at_the_budget(tmp_path, ctx) -> None:
    """Issue 10.9: a resume without the saved replay takes a refill of transitions before the
    next update and owes no updates for them; a resume whose budget ends inside the refill still
    finishes (final evaluation, exit 0) instead of waiting for steps that will never come."""
    run_dir = str(tmp_path / "run")
    cfg = tiny_config(run_dir, free_port_pair(), env_steps=200)
    no_replay = lambda c: dataclasses.replace(  # noqa: E731
        c, learner=dataclasses.replace(c.learner, save_replay=False))
    service = LearnerService(no_replay(cfg), tensorboard=False, console=False,
                             final_eval_timeout_s=20)
    thread, code = start(service)
    actor = FakeActor(ctx, int(cfg.learner.bind.rsplit(":", 1)[1]), evaluator_id=0)
    actor.hello_until_policy()
    actor.run_until_stop()
    thread.join(20)
    assert code == [0]
    stopped = load_checkpoint(run_dir)["counters"]
    # More budget: a refill of max(batch 8, initial 20) = 20 transitions, then updates again.
    port = free_port_pair()
    more = no_replay(tiny_config(run_dir, port, env_steps=300))
    resumed = LearnerService(more, resume=True, tensorboard=False, console=False,
                             final_eval_timeout_s=20)
    thread, code = start(resumed)
    assert resumed.trainer.refilling
    actor = FakeActor(ctx, port, actor=8, evaluator_id=1)
    actor.hello_until_policy()
    actor.run_until_stop()
    thread.join(20)
    assert code == [0]
    after = load_checkpoint(run_dir)["counters"]
    refilled = after["ratio_offset"]
    assert refilled >= 20  # no update ran until the replay held the refill
    assert after["updates"] == after["agent_steps"] - INITIAL - refilled  # none owed for it
    # A budget that ends inside the refill (5 more steps, refill 20): still finishes.
    port = free_port_pair()
    tight = no_replay(tiny_config(run_dir, port, env_steps=after["env_steps"] + 5))
    last = LearnerService(tight, resume=True, tensorboard=False, console=False,
                          final_eval_timeout_s=20)
    thread, code = start(last)
    actor = FakeActor(ctx, port, actor=9, evaluator_id=2)
    actor.hello_until_policy()
    actor.run_until_stop()
    thread.join(30)
    assert code == [0]
    final = load_checkpoint(run_dir)["counters"]
    assert final["updates"] == final["agent_steps"] - INITIAL - final["ratio_offset"]
    assert stopped["updates"] < after["updates"]


def test_refuses_to_start_without_harm(tmp_path, caplog: pytest.LogCaptureFixture,
                                       capsys: pytest.CaptureFixture) -> None:
    run_dir = str(tmp_path / "fresh")
    port = free_port_pair()
    argv = ["--task", "point_reach", "--gpus", "0", "--bind", f"tcp://{LOOPBACK}:{port}",
            "--run-dir", run_dir, "--resume"]
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        assert cli.main(argv) == 2  # --resume of a run that does not exist
        assert "no config file" in capsys.readouterr().err
        assert not os.path.exists(run_dir)  # nothing written
        # A run directory with its config but no checkpoint: refused, config.json unchanged.
        kept = str(tmp_path / "config_only")
        config_path = os.path.join(kept, "config.json")
        save_config(resolve(RunConfig(env=EnvConfig(task="point_reach"), run_dir=kept)),
                    config_path)
        before_bytes = open(config_path, "rb").read()
        assert cli.main([a if a != run_dir else kept for a in argv]) == 2  # no checkpoint
        assert open(config_path, "rb").read() == before_bytes
        log_text = open(os.path.join(kept, "learner.log")).read()
        assert "no checkpoint" in log_text
    finally:
        for h in root.handlers[len(before):]:
            root.removeHandler(h)
            h.close()

    cfg = tiny_config(run_dir, port, env_steps=100)
    if not torch.cuda.is_available():
        gpu = dataclasses.replace(cfg, learner=dataclasses.replace(cfg.learner, gpus=1))
        with caplog.at_level(logging.ERROR):
            assert LearnerService(gpu, tensorboard=False, console=False).run() == 2
        assert "use --gpus 0" in caplog.text

    os.makedirs(os.path.join(run_dir, "checkpoints"))
    with open(os.path.join(run_dir, "checkpoints", "latest"), "w") as f:
        f.write("ckpt-5.pt\n")
    assert LearnerService(cfg, tensorboard=False, console=False).run() == 2  # would overwrite
    assert LearnerService(cfg, resume=True, tensorboard=False, console=False).run() == 2  # missing
    assert not os.path.exists(os.path.join(run_dir, "config.json"))


def test_the_learners_data_socket_keeps_the_services_short_queue(tmp_path) -> None:
    """README "The service": 2 messages per actor queued in the learner's PULL and a 64 KiB
    kernel receive buffer (frames); the control socket is not throttled that way."""
    service = LearnerService(tiny_config(str(tmp_path / "q"), free_port_pair(), env_steps=100),
                             tensorboard=False, console=False)
    try:
        service._setup()  # what run() does first: bind the sockets the service receives on
        pull, _, control = service._sockets
        assert pull.getsockopt(zmq.RCVHWM) == 2
        assert pull.getsockopt(zmq.RCVBUF) == 64 * 2**10
        assert control.getsockopt(zmq.RCVHWM) > 2
    finally:
        service._close()


def test_cli_subprocess_checkpoints_on_sigterm(tmp_path, ctx: zmq.Context) -> None:
    run_dir, port = str(tmp_path / "sub"), free_port_pair()
    argv = [sys.executable, "-m", "learner.cli", "--task", "point_reach", "--gpus", "0",
            "--bind", f"tcp://{LOOPBACK}:{port}", "--run-dir", run_dir, "--hidden-dim", "32",
            "--num-points", "4", "--conv-channels", "8", "--batch-size", "8",
            "--capacity", "500", "--initial-random-steps", "20"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen(argv, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        actor = FakeActor(ctx, port)
        policy = actor.hello_until_policy(timeout_s=60)  # the process imports torch first
        assert policy.meta["random"] is True
        for _ in range(3):
            actor.send_chunk()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Preemption is not the end of the run: no `stop` broadcast, so actors keep waiting. Read
    # everything the learner published before it exited (it stays queued on this SUB socket).
    actor.drain(wait_ms=2000)
    assert not actor.stopped
    assert os.path.exists(os.path.join(run_dir, "checkpoints", "latest"))
    torch.jit.load(os.path.join(run_dir, "policy.pt"))
    with open(os.path.join(run_dir, "learner.log")) as f:
        assert "stopped by signal" in f.read()


def test_mismatched_actor_and_evaluator_are_refused(tmp_path, ctx: zmq.Context) -> None:
    run_dir, port = str(tmp_path / "run"), free_port_pair()
    service = LearnerService(tiny_config(run_dir, port, env_steps=10_000), tensorboard=False,
                             console=False)
    thread, code = start(service)
    try:
        wrong = FakeActor(ctx, port, actor=3, settings=tiny_settings(frame_stack=3))
        deadline = time.monotonic() + 20
        refused: list[P.Message] = []
        while not refused and time.monotonic() < deadline:
            wrong.send(P.hello_message(3, "point_reach", os.getpid(), (3, 32, 32), 2,
                                       role=P.ACTOR, settings=wrong.settings))
            refused = [m for m in wrong.drain(wait_ms=200) if m.kind == P.REFUSE]
        assert refused and refused[0].meta["target_actor"] == 3
        assert refused[0].meta["role"] == P.ACTOR
        assert "--frame-stack 3 (learner: 2)" in refused[0].meta["reason"]
        assert not [m for m in wrong.received if m.kind == P.POLICY]  # never given the policy
        # An evaluator with another action repeat: refused on the control socket too.
        ev = FakeActor(ctx, port, actor=4, evaluator_id=5, settings=tiny_settings(action_repeat=2))
        refused = []
        while not refused and time.monotonic() < deadline:
            ev.drain(wait_ms=0)  # sends a heartbeat
            ev.control.send_multipart(P.encode(P.hello_message(
                5, "point_reach", os.getpid(), (3, 32, 32), 2, role=P.EVALUATOR,
                settings=ev.settings)))
            refused = [m for m in ev.drain(wait_ms=200)
                       if m.kind == P.REFUSE and m.meta["role"] == P.EVALUATOR]
        assert refused and "--action-repeat 2 (learner: 1)" in refused[0].meta["reason"]
        assert service.evaluator.alive() == []  # its heartbeats do not make it an evaluator
        assert service.receiver.rejects.counts.get("config", 0) >= 2
    finally:
        service.request_stop()
        thread.join(20)


def test_cli_resume_keeps_the_runs_config_under_the_flags_given(tmp_path):
    from fpac_async.config import ConfigError
    from learner.cli import build_parser, make_config

    run_dir = str(tmp_path / "run")
    saved = RunConfig(env=EnvConfig(task="point_reach"), run_dir=run_dir, env_steps=777)
    saved = dataclasses.replace(saved, agent=dataclasses.replace(saved.agent, lr=5e-4, tau=0.05))
    save_config(saved, os.path.join(run_dir, "config.json"))
    parser = build_parser()
    argv = ["--resume", "--run-dir", run_dir, "--env-steps", "900"]
    cfg = make_config(parser, parser.parse_args(argv), argv)
    assert (cfg.agent.lr, cfg.agent.tau, cfg.env.task) == (5e-4, 0.05, "point_reach")  # kept
    assert cfg.env_steps == 900  # the flag given now
    missing = ["--resume", "--run-dir", str(tmp_path / "none")]
    with pytest.raises(ConfigError, match="no config file"):
        make_config(parser, parser.parse_args(missing), missing)
