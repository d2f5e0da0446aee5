"""`stop` end to end with the real commands: fpac-learner (learner.cli) and fpac-actors
(actors.cli, one actor and one evaluator) as separate processes on loopback. When the budget is
reached and the final evaluation recorded, the learner broadcasts `stop` and exits 0; every
actor slot then exits 0, is marked done and is NOT restarted, and fpac-actors exits 0."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from fpac_async.wire.transport import free_port_pair

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = ["--task", "point_reach", "--eval-episodes", "1"]
TINY = [*ENV, "--hidden-dim", "32", "--num-points", "4", "--conv-channels", "8", "--batch-size", "8"]


def test_learner_stop_ends_every_actor_slot_with_exit_0_and_no_restart(tmp_path) -> None:
    run_dir, port = str(tmp_path / "run"), free_port_pair()
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    learner_err, actors_err = open(tmp_path / "learner.err", "w"), open(tmp_path / "actors.err", "w")
    learner = subprocess.Popen(
        [sys.executable, "-m", "learner.cli", *TINY, "--gpus", "0", "--bind",
         f"tcp://127.0.0.1:{port}", "--run-dir", run_dir, "--env-steps", "100", "--replay-ratio", "0.1",
         "--capacity", "500", "--initial-random-steps", "20", "--eval-every-env-steps", "100000",
         "--log-every-s", "0.5"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=learner_err)
    actors = subprocess.Popen(
        [sys.executable, "-m", "actors.cli", *ENV, "--n", "1", "--evaluator",
         "--learner", f"127.0.0.1:{port}", "--steps-per-message", "8", "--stats-every-s", "1"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=actors_err)
    try:
        deadline = time.monotonic() + 200
        while learner.poll() is None and actors.poll() is None:  # an early actors exit fails fast
            assert time.monotonic() < deadline, "the run did not end within 200 s"
            time.sleep(0.5)
        assert learner.wait(60) == 0, (tmp_path / "learner.err").read_text()[-3000:]
        assert actors.wait(60) == 0, (tmp_path / "actors.err").read_text()[-3000:]
    finally:
        for p in (learner, actors):
            if p.poll() is None:
                p.kill()
                p.wait()
    log = (tmp_path / "actors.err").read_text()
    # Both slots (actor 0 and the evaluator) ended as done, none restarted.
    assert log.count("finished (the learner ended the run)") == 2, log[-3000:]
    assert "restarting" not in log, log[-3000:]
    with open(os.path.join(run_dir, "evals.jsonl")) as f:
        evals = [json.loads(line) for line in f]
    assert evals and evals[-1]["env_steps"] >= 100  # the final policy's evaluation is recorded
