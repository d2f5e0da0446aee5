"""`fpac-train` end to end on the CPU: a real learner and 2 actor processes over loopback sockets.

- It LEARNS point_reach: the final evaluation return (from metrics.jsonl) is clearly above a
  uniform random policy's, measured here on the same eval seeds and episode count.
- Ctrl-C (SIGINT) leaves no process behind and a checkpoint that --resume continues.
The commands run as `python -m deploy.train_cli` in a subprocess so signals and processes are real.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from actors.envs import make_vec_env
from actors.evaluator import EVAL_SEED_OFFSET, Evaluator
from deploy.serial import _UniformPolicy, tiny_config
from fpac_async.config import resolve
from learner.checkpoint import load_checkpoint
from run_artefacts import check_artefacts
from test_supervisor import alive, descendants, wait_gone

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The agent settings with which the serial runner learns point_reach (deploy.serial.tiny_config,
# measured in bench/results/tiny_learning.jsonl), as flags.
_TINY = tiny_config()
TINY_AGENT = [
    "--num-points", str(_TINY.agent.num_points), "--hidden-dim", str(_TINY.agent.hidden_dim),
    "--conv-channels", str(_TINY.agent.conv_channels), "--batch-size",
    str(_TINY.agent.batch_size), "--lr", str(_TINY.agent.lr),
    "--initial-random-steps", str(_TINY.replay.initial_random_steps),
    "--replay-ratio", str(_TINY.replay.replay_ratio), "--capacity", str(_TINY.replay.capacity),
    "--weights-every", str(_TINY.learner.weights_every)]
# point_reach: action repeat 1; the serial runner reaches about -4 after 1500 updates (random -40)
LEARN_ENV_STEPS = 2000
EVAL_EPISODES = _TINY.learner.eval_episodes
ACTORS = 2


def train(args: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploy.train_cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout_s, check=False)


def start_train(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "deploy.train_cli", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def rows(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def eval_file(run_dir: str) -> list[dict]:
    """The run's evals.jsonl: one line per evaluation."""
    with open(os.path.join(run_dir, "evals.jsonl")) as f:
        return [json.loads(line) for line in f]


def eval_rows(run_dir: str) -> list[dict]:
    return [r for r in rows(run_dir) if r.get("eval_env_steps") is not None]


def random_return(seed: int, actor_ids: range, episodes: int) -> float:
    """The uniform random policy's mean return on the eval seeds of evaluator ids `actor_ids`
    (an evaluator's env is seeded seed + 1000 * id + EVAL_SEED_OFFSET; fpac-train runs id 0);
    the highest, to be conservative."""
    env_cfg = _TINY.env
    means = []
    for actor in actor_ids:
        eval_seed = seed + 1000 * actor + EVAL_SEED_OFFSET
        evaluator = Evaluator(lambda n, s=eval_seed: make_vec_env(env_cfg, s, n), seed=eval_seed)
        try:
            returns, _ = evaluator.run(_UniformPolicy(2, eval_seed), episodes)
        finally:
            evaluator.close()
        means.append(float(np.mean(returns)))
    return max(means)


@pytest.fixture
def run_dir():
    """A private directory: pytest's tmp_path root is pruned by concurrent pytest sessions of the
    same user (it keeps the 3 newest), which can delete a long test's run directory under it."""
    with tempfile.TemporaryDirectory(prefix="fpac-train-test-") as d:
        yield os.path.join(d, "run")


@pytest.mark.timeout(480)  # past its run's own 420 s limit: on a loaded machine it passed 300 s
def test_fpac_train_learns_point_reach(run_dir):
    start = time.monotonic()
    proc = train(["--task", "point_reach", *TINY_AGENT, "--env-steps", str(LEARN_ENV_STEPS),
                  "--eval-every-env-steps", "1000", "--eval-episodes", str(EVAL_EPISODES),
                  "--actors", str(ACTORS), "--run-dir", run_dir, "--log-every-s", "2",
                  "--seed", "0", "--no-gif"], timeout_s=420)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    evals = eval_rows(run_dir)
    assert evals and evals[-1]["eval_env_steps"] >= LEARN_ENV_STEPS
    final = evals[-1]["eval_return"]
    baseline = random_return(0, range(ACTORS), EVAL_EPISODES)
    curve = [(r["eval_env_steps"], round(r["eval_return"], 1)) for r in evals]
    print(f"point_reach via fpac-train ({ACTORS} actors): eval {curve}, random {baseline:.1f}, "
          f"{seconds:.0f} s")
    # Reward is -distance to the centre per step: a policy that reaches the centre early and stays
    # there loses far less than half of what random wandering loses.
    assert final > 0.5 * baseline, (final, baseline, curve)
    # The run's artefacts are where the report says they are.
    check_artefacts(run_dir, ["config.json", "metrics.csv", "policy.pt", "learning_curve.png",
                              "tb"], "point_reach", 2, resolve(_TINY).env.image_size)
    assert f"tensorboard --logdir {os.path.join(run_dir, 'tb')}" in proc.stdout
    assert "learning_curve.png" in proc.stdout and "env steps |" in proc.stdout


def test_sigint_stops_everything_and_resume_continues(run_dir):
    small = ["--task", "point_reach", "--num-points", "4", "--hidden-dim", "32",
             "--conv-channels", "8", "--batch-size", "16", "--initial-random-steps", "100",
             "--eval-every-env-steps", "0", "--eval-episodes", "2", "--log-every-s", "0.5",
             "--actors", str(ACTORS), "--no-gif"]
    proc = start_train([*small, "--env-steps", "1000000", "--run-dir", run_dir])
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any(r["updates"] > 0 for r in rows(run_dir)):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.3)
        assert any(r["updates"] > 0 for r in rows(run_dir)), "no update within 90 s"
        children = descendants(proc.pid)
        assert len(children) >= ACTORS  # the actor processes (and multiprocessing's helpers)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGINT, out[-3000:]
    assert not wait_gone(children), "processes left behind after Ctrl-C"
    assert f"fpac-train --resume {run_dir}" in out
    stopped = load_checkpoint(run_dir)["counters"]
    assert stopped["updates"] > 0 and stopped["env_steps"] > 0

    budget = stopped["env_steps"] + 300
    rows_before = len(rows(run_dir))
    resumed = train(["--resume", run_dir, "--env-steps", str(budget), "--actors", "1",
                     "--no-gif"], timeout_s=120)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    final = load_checkpoint(run_dir)["counters"]
    assert final["env_steps"] >= budget
    assert final["updates"] > stopped["updates"]
    assert final["policy_version"] > stopped["policy_version"]
    # The resumed learner's rows continue the counters instead of starting from zero.
    resumed_rows = rows(run_dir)[rows_before:]
    assert resumed_rows
    assert min(r["env_steps"] for r in resumed_rows) >= stopped["env_steps"]
    assert min(r["updates"] for r in resumed_rows) >= stopped["updates"]
    with open(os.path.join(run_dir, "config.json")) as f:
        assert json.load(f)["env_steps"] == budget  # the flag given with --resume was applied


def test_bad_task_fails_fast(tmp_path):
    """A config error is reported before any process starts or anything is written."""
    proc = train(["--task", "no_such_task", "--run-dir", str(tmp_path / "x")], timeout_s=60)
    assert proc.returncode == 2 and "unknown task" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_resume_config_keeps_the_run_and_applies_given_flags(tmp_path):
    from deploy.train_cli import build_parser, make_config
    from fpac_async.config import save_config

    parser = build_parser()
    fresh_argv = ["--task", "point_reach", "--num-points", "4", "--env-steps", "100",
                  "--run-dir", str(tmp_path), "--bind", "tcp://127.0.0.1:1"]
    first = make_config(parser.parse_args(fresh_argv), fresh_argv, parser)
    save_config(first, str(tmp_path / "config.json"))
    argv = ["--resume", str(tmp_path), "--env-steps", "500", "--no-velocity"]
    cfg = make_config(parser.parse_args(argv), argv, parser)
    assert cfg.env_steps == 500 and cfg.agent.velocity is False  # given: applied
    assert cfg.agent.num_points == 4 and cfg.env.task == "point_reach"  # not given: kept
    assert cfg.run_dir == str(tmp_path)
    assert cfg.learner.bind != "tcp://127.0.0.1:1"  # a fresh free port, not the old one


def test_defaults_run_dir_port_and_actor_count():
    from deploy.local_run import connect_address, default_actor_count
    from fpac_async.wire.transport import free_port_pair
    from deploy.train_cli import build_parser, make_config

    parser = build_parser()
    cfg = make_config(parser.parse_args(["--task", "point_reach"]), ["--task", "point_reach"],
                      parser)
    assert cfg.run_dir.startswith(os.path.join("runs", "point_reach-"))
    assert cfg.run_dir.endswith("Z")  # UTC
    assert cfg.learner.bind.startswith("tcp://127.0.0.1:")
    assert connect_address("tcp://*:5555") == "127.0.0.1:5555"
    assert connect_address("tcp://127.0.0.1:6000") == "127.0.0.1:6000"
    assert default_actor_count(2, gpu=False) == 1 and default_actor_count(1, gpu=True) == 1
    assert default_actor_count(16, gpu=True) == 15 and default_actor_count(None, gpu=False) == 1
    port = free_port_pair()
    import socket

    for p in (port, port + 1):  # both free right now
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_progress_line_shows_budget_fraction_and_eta(tmp_path):
    from deploy.local_run import ProgressPrinter
    from learner.progress import Progress

    printer = ProgressPrinter(str(tmp_path), Progress(10_000))  # replay ratio 0: the step rate
    line = printer.progress.line({"env_steps": 2500, "sps": 100.0, "updates": 7,
                                  "train_return": -3.0})
    assert line.startswith("[ 25.0%] 2.5k/10.0k env steps | env 2.5k | ret -3.0")
    assert "updates 7" in line and line.endswith("eta 1m15s")  # 7500 steps at 100/s


def test_tiny_task_defaults_apply_under_explicit_flags():
    from deploy.train_cli import build_parser, make_config
    parser = build_parser()
    for argv, points in ((["--task", "point_reach"], 16), (["--task", "point_reach", "--num-points", "8"], 8),
                         (["--task", "cartpole_swingup"], 32)):
        cfg = make_config(parser.parse_args(argv), argv, parser)
        assert cfg.agent.num_points == points
    assert cfg.agent.hidden_dim == 1024 and cfg.replay.initial_random_steps == 1000
