"""fpac-experiment on a real grid: point_reach x {fpac, sac-state} x seeds {0, 1}, real fpac-train
runs (tiny budget), run as `python -m studies.experiment` in subprocesses.

- every run ends DONE; the figure, table and scores are written; the table's numbers are the
  mean and population std of the runs' final evaluations read here from evals.jsonl;
- running the grid again redoes nothing; a run whose DONE is removed is resumed from its
  checkpoint (not restarted);
- the generated Slurm array script, executed with bash (no sbatch here), runs its task's run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_KEYS = [f"point_reach/{a}/seed-{s}" for a in ("fpac", "sac-state") for s in (0, 1)]
BUDGET = 150  # env steps; the final evaluation comes at the first batch boundary past it
TRAIN_FLAGS = "--initial-random-steps 100 --eval-every-env-steps 100 --eval-episodes 2 " \
              "--log-every-s 2"


def experiment(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "studies.experiment", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=False, env=env)
    return proc


def events(root: str) -> list[dict]:
    with open(os.path.join(root, "experiment.log")) as f:
        return [json.loads(line) for line in f]


def evals(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "evals.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def grid():
    """The grid, run once for this module (about a minute on 2 busy cores)."""
    with tempfile.TemporaryDirectory(prefix="fpac-experiment-test-") as d:
        root = os.path.join(d, "grid")
        proc = experiment("run", "--grid", root, "--tasks", "point_reach",
                          "--agents", "fpac,sac-state", "--seeds", "0,1",
                          "--env-steps", str(BUDGET), "--parallel", "2",
                          "--train-flags", TRAIN_FLAGS, "--at", "100,200")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        yield root


def test_grid_runs_every_run_to_done_and_draws_its_figures(grid) -> None:
    for key in RUN_KEYS:
        with open(os.path.join(grid, key, "DONE")) as f:
            done = json.load(f)
        final = [e for e in evals(os.path.join(grid, key)) if e["final"]]
        assert done["exit_code"] == 0 and done["final_env_steps"] == final[-1]["env_steps"]
        assert final[-1]["env_steps"] >= BUDGET
    with open(os.path.join(grid, "figures", "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert [e["event"] for e in events(grid)].count("end") == 4


def test_table_numbers_are_mean_and_std_of_the_runs_evaluations(grid) -> None:
    # At the final evaluation's env steps (the same for every run: the same budget and batches),
    # a run's value is its final evaluation: no interpolation involved.
    finals = {key: [e for e in evals(os.path.join(grid, key)) if e["final"]][-1]
              for key in RUN_KEYS}
    steps = {f["env_steps"] for f in finals.values()}
    assert len(steps) == 1, steps
    at = steps.pop()
    out = os.path.join(grid, "figures-final")
    proc = experiment("plot", "--grid", grid, "--at", str(at), "--out", out)
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(out, "scores.json")) as f:
        rows = {r["agent"]: r["at"][str(at)] for r in json.load(f)["rows"]}
    with open(os.path.join(out, "table.md")) as f:
        table = f.read()
    for agent in ("fpac", "sac-state"):
        returns = [finals[f"point_reach/{agent}/seed-{s}"]["mean_return"] for s in (0, 1)]
        mean, std = float(np.mean(returns)), float(np.std(returns))
        assert rows[agent]["mean"] == pytest.approx(mean) and rows[agent]["n"] == 2
        assert rows[agent]["std"] == pytest.approx(std)
        assert f"| point_reach | {agent} (ours, 2 seeds) | {mean:.1f} ± {std:.1f} |" in table


def test_running_the_grid_again_redoes_nothing(grid) -> None:
    before = {k: os.path.getmtime(os.path.join(grid, k, "evals.jsonl")) for k in RUN_KEYS}
    n = len(events(grid))
    proc = experiment("run", "--grid", grid, "--no-plot")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    new = events(grid)[n:]
    assert sorted(e["run"] for e in new if e["event"] == "skip") == sorted(RUN_KEYS)
    assert [e for e in new if e["event"] != "skip"] == []
    assert {k: os.path.getmtime(os.path.join(grid, k, "evals.jsonl")) for k in RUN_KEYS} == before
    assert "0 runs finished, 4 were already DONE" in proc.stdout


def _resumed_only(grid: str, key: str, n_events: int, n_evals: int) -> None:
    new = events(grid)[n_events:]
    started = [e for e in new if e["event"] == "start"]
    assert [(e["run"], e["action"]) for e in started] == [(key, "resume")]
    assert "--resume" in started[0]["command"] and "--run-dir" not in started[0]["command"]
    assert os.path.exists(os.path.join(grid, key, "DONE"))
    # Its final evaluation was already recorded: fpac-train --resume says the run is finished
    # and writes no second row (issue 20; it used to re-run the final evaluation).
    assert len(evals(os.path.join(grid, key))) == n_evals
    with open(os.path.join(grid, key, "train.out")) as f:
        assert "is finished" in f.read()


def test_a_run_without_done_is_resumed_from_its_checkpoint(grid) -> None:
    key = "point_reach/sac-state/seed-1"
    os.remove(os.path.join(grid, key, "DONE"))
    n_events, n_evals = len(events(grid)), len(evals(os.path.join(grid, key)))
    proc = experiment("run", "--grid", grid, "--no-plot")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    _resumed_only(grid, key, n_events, n_evals)


def test_the_slurm_array_script_maps_its_task_to_the_run(grid) -> None:
    key = "point_reach/fpac/seed-0"
    done = os.path.join(grid, key, "DONE")
    os.replace(done, done + ".kept")
    proc = experiment("slurm", "--grid", grid, "--gpus", "0")
    os.replace(done + ".kept", done)
    assert proc.returncode == 0 and "1 runs: sbatch" in proc.stdout, proc.stderr
    script = os.path.join(grid, "slurm-array.sbatch")
    with open(script) as f:
        text = f.read()
    assert "#SBATCH --array=0-0\n" in text and f"RUNS=(\n  {key}\n)" in text
    # Array task 0 as Slurm would start it (bash ignores the #SBATCH lines): the run is DONE
    # again by now (as if another job finished it), so its run-one skips it.
    n_events = len(events(grid))
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="0")
    ran = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=600,
                         check=False)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert [(e["event"], e["run"]) for e in events(grid)[n_events:]] == [("skip", key)]


def test_an_unknown_agent_or_a_changed_grid_is_refused(grid) -> None:
    proc = experiment("run", "--grid", grid + "-other", "--tasks", "point_reach",
                      "--agents", "fpac,nope", "--seeds", "0")
    assert proc.returncode == 2 and "unknown agent 'nope'" in proc.stderr
    proc = experiment("run", "--grid", grid + "-other", "--tasks", "point_reach",
                      "--agents", "fpac", "--seeds", "0", "--train-flags", "--no-such-flag 1")
    assert proc.returncode == 2 and "fpac-train refuses --no-such-flag 1" in proc.stderr
    assert not os.path.exists(grid + "-other")  # nothing written for a grid that cannot run
    proc = experiment("run", "--grid", grid, "--tasks", "point_reach", "--agents", "fpac",
                      "--seeds", "0,1")
    assert proc.returncode == 2 and "was made with other settings" in proc.stderr


def test_the_default_table_follows_the_grids_budget(grid) -> None:
    """Issue 20: no --at: one column at the tiny grid's budget (not n/a at 100k and 500k)."""
    out = os.path.join(grid, "figures-default")
    proc = experiment("plot", "--grid", grid, "--out", out)
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(out, "table.md")) as f:
        table = f.read()
    assert f"| task | agent | {BUDGET} env steps |" in table
    assert "100k" not in table and "n/a" not in table


def test_the_curves_start_at_zero_and_say_1_seed() -> None:
    """Issue 20: a small dip near -5 is not drawn as a steep decline; one run is '1 seed'."""
    from studies.figures import draw_grid
    from studies.table import default_columns

    curve = [(100.0, -5.0), (200.0, -5.2), (300.0, -5.1)]
    fig = draw_grid({("point_reach", "fpac"): [curve]}, ["point_reach"], ["fpac"], [], [])
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert low <= -5.2 and high >= 0.0
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["fpac (1 seed)"]
    assert default_columns(None) == [100_000, 500_000]
    assert default_columns(150) == [150] and default_columns(1_000_000)[-1] == 1_000_000
