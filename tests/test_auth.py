"""CurveZMQ (Ironhouse): fpac-keys writes usable keys; a learner started with --auth admits a real
actor and evaluator whose key is listed, and refuses, counts and tells nothing to peers without CURVE or with a
key it does not list; bad key directories are clear errors."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from typing import Callable, Iterator

import pytest
import torch
import zmq

from actors.actor_loop import ActorLoop
from actors.eval_loop import EvalLoop
from deploy.keys_cli import create_keys
from fpac_async.wire import protocol as P
from fpac_async.wire.auth import (ENV_DIR, ENV_KEY, AuthError, ClientKeys, client_keys_from_env,
                                  export_client_keys, load_client_keys, load_key_file,
                                  load_server_keys)
from fpac_async.config import (AgentConfig, EnvConfig, LearnerConfig, ReplayConfig, RunConfig,
                               resolve)
from fpac_async.wire.transport import actor_sockets, free_port_pair
from learner.service import LearnerService

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOOPBACK = "127.0.0.1"


def wait_for(condition: Callable[[], bool], what: str, state: Callable[[], str] = str,
             timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what} {state()}"
        time.sleep(0.02)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(run_dir: str, port: int) -> RunConfig:
    return resolve(RunConfig(
        agent=AgentConfig(hidden_dim=32, num_points=4, conv_channels=8, batch_size=8),
        env=EnvConfig(task="point_reach", envs_per_actor=1),
        replay=ReplayConfig(capacity=500, initial_random_steps=1000),
        learner=LearnerConfig(bind=f"tcp://{LOOPBACK}:{port}", gpus=0, log_every_s=0.1,
                              eval_every_env_steps=0),
        env_steps=10**6, run_dir=run_dir))


def test_fpac_keys_writes_the_layout_with_private_secrets_and_never_overwrites(tmp_path):
    keys = tmp_path / "keys"
    cmd = [sys.executable, "-m", "deploy.keys_cli", str(keys), "--actors", "2"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    secrets = [keys / "learner.key_secret", keys / "actors_secret" / "actor-0.key_secret",
               keys / "actors_secret" / "actor-1.key_secret"]
    for path in secrets:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert stat.S_IMODE(os.stat(keys / "actors_secret").st_mode) == 0o700
    assert sorted(os.listdir(keys / "actors")) == ["actor-0.key", "actor-1.key"]  # public only
    server = load_server_keys(str(keys))
    client = load_client_keys(str(keys), "actor-1")
    assert server.allowed == 2 and client.server == server.public
    assert load_key_file(str(keys / "actors" / "actor-1.key"), secret=False)[0] == client.public

    learner_secret = (keys / "learner.key_secret").read_bytes()
    cmd[-1] = "3"
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("wrote ") == 2  # actor-2's pair only
    assert (keys / "learner.key_secret").read_bytes() == learner_secret
    assert load_client_keys(str(keys), "actor-1") == client


def test_unusable_key_directories_are_clear_errors(tmp_path):
    with pytest.raises(AuthError, match="no such directory"):
        load_server_keys(str(tmp_path / "missing"))
    keys = tmp_path / "keys"
    create_keys(str(keys), actors=1)
    with pytest.raises(AuthError, match="no such key file"):
        load_client_keys(str(keys), "actor-7")
    os.remove(keys / "actors" / "actor-0.key")
    with pytest.raises(AuthError, match="no actor public keys"):
        load_server_keys(str(keys))
    create_keys(str(keys), actors=1, names=["spare"])
    load_server_keys(str(keys))
    text = (keys / "learner.key_secret").read_text()
    (keys / "learner.key_secret").write_text(text.replace("secret-key", "secret-kex"))
    with pytest.raises(AuthError, match="no valid secret key"):
        load_server_keys(str(keys))
    # The CLIs stop before starting anything, with exit code 2 and the reason.
    out = subprocess.run([sys.executable, "-m", "actors.cli", "--task", "point_reach",
                          "--auth", str(tmp_path / "missing")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no such directory" in out.stderr
    cfg = _config(str(tmp_path / "run"), free_port_pair())
    assert LearnerService(cfg, tensorboard=False, console=False,
                          auth_dir=str(keys)).run() == 2
    assert not os.path.exists(tmp_path / "run" / "config.json")  # nothing written


def test_actor_keys_travel_to_spawned_processes_in_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DIR, "")  # restored after the test, whatever export_client_keys did
    monkeypatch.setenv(ENV_KEY, "")
    create_keys(str(tmp_path), actors=2)
    assert client_keys_from_env() is None
    exported = export_client_keys(str(tmp_path), "actor-1")
    assert client_keys_from_env() == exported == load_client_keys(str(tmp_path), "actor-1")
    assert export_client_keys(None) is None and client_keys_from_env() is None


def test_fpac_train_gives_the_keys_to_its_learner_and_actor_processes(tmp_path, monkeypatch):
    from deploy.local_run import LocalRun  # noqa: PLC0415
    monkeypatch.setenv(ENV_DIR, "")
    monkeypatch.setenv(ENV_KEY, "")
    cfg = _config(str(tmp_path / "run"), free_port_pair())
    with pytest.raises(AuthError, match="no such directory"):
        LocalRun(cfg, 1, progress=False, auth_dir=str(tmp_path / "missing"))
    keys = str(tmp_path / "keys")
    create_keys(keys, actors=2)
    run = LocalRun(cfg, 1, progress=False, auth_dir=keys, auth_key="actor-1")
    assert run.service.auth_dir == keys
    assert client_keys_from_env() == load_client_keys(keys, "actor-1")  # what spawned actors read


def test_fpac_train_with_auth_runs_to_the_end(tmp_path):
    """`fpac-train --auth` end to end: its spawned actor and evaluator processes use the keys
    (a refused actor would never deliver a step: the run would not end)."""
    keys, run_dir = str(tmp_path / "keys"), str(tmp_path / "run")
    create_keys(keys, actors=1)
    cmd = [sys.executable, "-m", "deploy.train_cli", "--auth", keys, "--task", "point_reach",
           "--num-points", "4", "--hidden-dim", "32", "--conv-channels", "8", "--batch-size", "16",
           "--initial-random-steps", "100", "--eval-every-env-steps", "200", "--eval-episodes",
           "2", "--log-every-s", "0.5", "--actors", "1", "--no-gif", "--env-steps", "400",
           "--run-dir", run_dir, "--gpus", "0"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr[-3000:]
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        last = [json.loads(line) for line in f][-1]
    assert last["env_steps"] >= 400 and last["auth_refused"] == 0
    with open(os.path.join(run_dir, "evals.jsonl")) as f:
        assert any(json.loads(line)["final"] for line in f)
    assert "CURVE on" in out.stderr


def test_curve_learner_admits_a_listed_actor_and_refuses_strangers(tmp_path, monkeypatch):
    keys, other = str(tmp_path / "keys"), str(tmp_path / "other")
    create_keys(keys, actors=1)
    create_keys(other, actors=1)  # a well-formed key the learner does not list
    port = free_port_pair()
    address = f"{LOOPBACK}:{port}"
    cfg = _config(str(tmp_path / "run"), port)
    service = LearnerService(cfg, tensorboard=False, console=False, auth_dir=keys)
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(service.run()), daemon=True)
    thread.start()
    assert service.ready.wait(30), "the learner did not start"
    guard, receiver = service.guard, service.receiver
    assert guard is not None and receiver is not None
    ctx = zmq.Context()
    try:
        # Strangers: one speaks no CURVE, one has a valid keypair (and the learner's public key)
        # that is not in keys/actors. Each says hello, as an actor would.
        mine = load_client_keys(other)
        unlisted = ClientKeys(mine.public, mine.secret, load_server_keys(keys).public, "x")
        strangers = [actor_sockets(ctx, address), actor_sockets(ctx, address, secure=unlisted.apply)]
        hello = P.encode(P.hello_message(9, "point_reach", os.getpid(), (3, 32, 32), 2,
                                         role=P.ACTOR))
        for push, _ in strangers:
            try:
                push.send_multipart(hello, flags=zmq.NOBLOCK)
            except zmq.Again:  # no completed handshake: the message is not even queued
                pass
        # The unlisted key is refused by the learner's ZAP handler: counted as such on both
        # sockets. A peer without CURVE hangs up as soon as it sees the learner's greeting; who
        # notices the mismatch first is a race, so it lands in auth_refused_plain or (the peer
        # was first) handshakes_failed.
        counts = guard.counts
        wait_for(lambda: counts()["auth_refused_key"] >= 2
                 and counts()["auth_refused_plain"] + counts()["handshakes_failed"] >= 2,
                 "both strangers to be refused on the data and broadcast sockets",
                 lambda: f"counts {counts()}")

        # The listed actor: a real ActorLoop that finds its key in the environment, as the
        # actor processes of fpac-actors --auth do.
        monkeypatch.setenv(ENV_DIR, keys)
        monkeypatch.setenv(ENV_KEY, "actor-0")
        loop = ActorLoop(3, cfg.env, address, seed=0, steps_per_message=8,
                         frame_stack=cfg.agent.frame_stack, encoder=cfg.agent.encoder)
        actor = threading.Thread(target=lambda: loop.run(max_agent_steps=48), daemon=True)
        actor.start()
        # ... and an evaluator, which talks on the control socket.
        done = threading.Event()
        evaluator = EvalLoop(5, cfg.env, address, seed=0, frame_stack=cfg.agent.frame_stack,
                             encoder=cfg.agent.encoder, episodes=1)
        evaluating = threading.Thread(target=lambda: evaluator.run(should_stop=done.is_set),
                                      daemon=True)
        evaluating.start()
        wait_for(lambda: receiver.agent_steps >= 40, "the listed actor's steps")
        wait_for(lambda: 5 in service.evaluator.alive() and getattr(evaluator, "policy", None)
                 is not None and evaluator.policy.ready, "the evaluator's hello and the policy")
        done.set()
        actor.join(30)
        evaluating.join(30)
        # The policy went out (answering the actor's hello) while the strangers listened.
        for _, sub in strangers:
            assert not sub.poll(500, zmq.POLLIN), "a stranger received a broadcast"
        assert receiver.actors() == {3} and receiver.rejects.total == 0
        refused = counts()["auth_refused"]
        assert refused >= 2
    finally:
        for sockets in locals().get("strangers", []):
            for sock in sockets:
                sock.close(linger=0)
        ctx.term()
        service.request_stop(signal.SIGTERM)
        thread.join(30)
    assert code == [128 + signal.SIGTERM]
    with open(os.path.join(cfg.run_dir, "metrics.jsonl")) as f:
        last = [json.loads(line) for line in f][-1]
    assert last["auth_refused"] >= refused and last["auth_refused_key"] >= 2

