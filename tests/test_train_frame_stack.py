"""`fpac-train --encoder pixels --frame-stack 3`: the frame stack reaches the actor and evaluator
processes (it used to stay at 2 there, and the actors crash-looped once the random phase ended),
so the run gets past the random phase, evaluates and finishes."""
from __future__ import annotations

import json
import os

from learner.checkpoint import load_checkpoint
from test_train_e2e import eval_file, run_dir, train  # noqa: F401 (run_dir is a fixture)

ARGS = ["--task", "point_reach", "--encoder", "pixels", "--frame-stack", "3", "--actors", "1",
        "--env-steps", "600", "--initial-random-steps", "200", "--hidden-dim", "32",
        "--conv-channels", "8", "--pixels-feature-dim", "16", "--batch-size", "16",
        "--weights-every", "20", "--eval-every-env-steps", "300", "--eval-episodes", "2",
        "--log-every-s", "1", "--gpus", "0", "--no-gif"]


def test_frame_stack_3_runs_past_the_random_phase(run_dir):  # noqa: F811
    done = train([*ARGS, "--run-dir", run_dir], timeout_s=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    counters = load_checkpoint(run_dir)["counters"]
    assert counters["env_steps"] >= 600 and counters["updates"] > 0
    assert counters["policy_version"] > 1  # the actors acted with learned weights
    with open(os.path.join(run_dir, "config.json")) as f:
        assert json.load(f)["agent"]["frame_stack"] == 3
    evals = eval_file(run_dir)
    assert evals and evals[-1]["final"] and evals[-1]["lengths"] == [50, 50]
    with open(os.path.join(run_dir, "learner.log")) as f:
        log = f.read()
    assert "refus" not in log and "restarting" not in log  # no actor was refused or crashed
