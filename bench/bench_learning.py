"""Learning on real tasks through the whole service (`fpac-train`): eval return against env steps
and wall-clock, written to bench/results/learning.jsonl with the machine and versions.

    python bench/bench_learning.py --preset sac-state-cartpole     # CPU: SAC-state, 100k env steps
    python bench/bench_learning.py --preset fpac-cartpole-gpu      # GPU: FPAC pixels, 15 actors
    python bench/bench_learning.py --preset tiny-actors            # 1/2/4 actors x 3 seeds, tiny task
    python bench/bench_learning.py --preset lag-actors             # lag p95 for 1/2/4/8 actors, tiny
    python bench/bench_learning.py --preset lag-learning           # serial vs 1 and 4 actors, 3 seeds
    python bench/bench_learning.py --preset lag-ratio              # updates run / owed along a run

Each run's row holds its settings (the run's config.json), every evaluation (env steps of the
evaluated policy, seconds since the start, mean and std over the episodes), the final mean and
the time to reach `--target` (None if it never did), and the policy lag in updates over the run's
metric windows (median of the windows' p95, largest max; learner/lag_bound.py). `tiny-actors`
also prints the actor-count table (final eval mean +- std over seeds), which must not depend on
the number of actors; `lag-actors` the lag table for 1/2/4/8 actors (one seed each), which must
be flat. `lag-learning` is issue 19's learning comparison: SAC-state on cartpole_swingup for 100k
env steps, the serial runner (deploy/serial.py, weights every update: lag 0) against the service
with 1 and with 4 actors, seeds 0/1/2 each (about 2 h of CPU on 2 cores).
Extra arguments after `--` go to fpac-train (e.g. `-- --env-steps 20000`).

A run too long for one sitting (fpac-cartpole-cpu takes hours on a 2-core CPU) is started by
hand, `fpac-train <the preset's args> --run-dir DIR`, stopped with Ctrl-C / SIGINT (it leaves a
checkpoint), resumed with `fpac-train --resume DIR`, and recorded whenever wanted with
`--from-run DIR`: the row holds every evaluation so far and `partial: true` until the final
evaluation is in.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.provenance import ROOT, provenance  # noqa: E402

PRESETS = {
    # SAC from the DMC state (paper Fig. 2's SAC-state; published at 100k env steps: 812 +- 45
    # (DrQ paper), 835 +- 22 (CURL paper)). No rendering: physics speed; the CPU learner sets
    # the pace at replay ratio 1.
    "sac-state-cartpole": {"args": ["--task", "cartpole_swingup", "--encoder", "state",
                                    "--env-steps", "100000", "--actors", "1", "--gpus", "0"],
                           "target": 750.0},
    # FPAC from pixels on a CPU learner (issue 21): the authors' agent, default settings, one
    # actor; --save-replay so that `fpac-train --resume RUN_DIR` continues exactly. Published at
    # 100k env steps: DrQ-v2 626, MR.Q 477, DrQ 759, CURL 582, pixel SAC 419.
    "fpac-cartpole-cpu": {"args": ["--task", "cartpole_swingup", "--env-steps", "100000",
                                   "--actors", "1", "--gpus", "0", "--save-replay"],
                          "target": 600.0},
    # FPAC from pixels on a GPU machine (published at 100k: DrQ 759 +- 92, CURL 582 +- 146).
    "fpac-cartpole-gpu": {"args": ["--task", "cartpole_swingup", "--env-steps", "100000",
                                   "--actors", "15", "--gpus", "1"], "target": 750.0},
}
TINY_ACTORS = (1, 2, 4)
LAG_ACTORS = (1, 2, 4, 8)
SAC_STATE = ["--task", "cartpole_swingup", "--encoder", "state", "--gpus", "0"]
# The serial runner starts from the tiny task's settings (deploy.serial.tiny_config): these flags
# give it cartpole_swingup's resolved defaults, as fpac-train has them.
SERIAL_AS_SERVICE = ["--backend", "dmc", "--image-size", "84", "--action-repeat", "8",
                     "--episode-control-steps", "1000", "--hidden-dim", "1024", "--lr", "3e-4",
                     "--batch-size", "128", "--capacity", "100000", "--initial-random-steps",
                     "1000", "--eval-every-env-steps", "10000", "--eval-episodes", "10"]


def run_serial(args: list[str], env_steps: int, action_repeat: int, out: str,
               timeout_s: float) -> dict:
    """One serial-runner run (deploy/serial.py: acting and learning in turn, weights every
    update, so every record is acted by the current policy: lag 0); its evaluations."""
    cmd = [sys.executable, "-m", "deploy.serial", *args, "--weights-every", "1",
           "--agent-steps", str(env_steps // action_repeat), "--record", out]
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
                          check=False)
    rows = []
    if os.path.exists(out):
        with open(out) as f:
            rows = [json.loads(line) for line in f]
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
    row = rows[-1] if rows else {}
    return {"exit_code": proc.returncode, "wall_s": round(time.time() - start, 1),
            "final_mean": row.get("final_eval_return"), "eval_returns": row.get("eval_returns"),
            "policy_lag_updates_p95": 0.0, "policy_lag_updates_max": 0.0}


def lag_learning(a: argparse.Namespace, base: str, stamp: dict) -> int:
    """Serial (lag 0) vs the service with 1 and 4 actors, SAC-state cartpole_swingup, 3 seeds.
    `--` flags go to both (e.g. `-- --env-steps 3000` for a dry run)."""
    extra = list(a.extra)
    env_steps = int(extra[extra.index("--env-steps") + 1]) if "--env-steps" in extra else 100_000
    repeat = int(extra[extra.index("--action-repeat") + 1]) if "--action-repeat" in extra else 8
    rest = [x for i, x in enumerate(extra) if x != "--env-steps"
            and (i == 0 or extra[i - 1] != "--env-steps")]  # the budget is given to each runner
    table: dict[str, list] = {}
    for seed in [int(x) for x in a.seeds.split(",")]:
        for name in a.runners.split(","):
            args = [*SAC_STATE, "--seed", str(seed)]
            if name == "serial":
                result = run_serial([*args, *SERIAL_AS_SERVICE, *rest], env_steps, repeat,
                                    os.path.join(base, f"serial-s{seed}.jsonl"), a.timeout_s)
                summary = {"final_mean": result["final_mean"]}
            else:
                args += ["--env-steps", str(env_steps), "--actors", name.split("-")[1], *rest]
                result = run_train(args, os.path.join(base, f"{name}-s{seed}"), a.timeout_s)
                summary = summarise(result, a.target)
            record({"bench": "learning", "preset": "lag-learning", **stamp, "runner": name,
                    "seed": seed, "args": args, "env_steps": env_steps, **summary, **result},
                   a.out)
            table.setdefault(name, []).append(summary["final_mean"])
            print(f"{name} seed {seed}: final eval {summary['final_mean']}, lag p95 "
                  f"{result['policy_lag_updates_p95']} ({result['wall_s']:.0f} s)", flush=True)
    print("\n| runner | final eval, mean +- std over seeds | runs |\n|---|---|---|")
    for name, finals in table.items():
        xs = np.array([x for x in finals if x is not None], float)
        print(f"| {name} | {xs.mean():.1f} +- {xs.std():.1f} | {len(xs)} |" if len(xs) else
              f"| {name} | - | 0 |")
    return 0
TINY_SEEDS = (0, 1, 2)


def lag_ratio(a: argparse.Namespace, base: str, stamp: dict) -> int:
    """Does the replay ratio hold ALONG a run, not only over it? SAC-state cartpole_swingup,
    20k env steps, 1 and 4 actors, per `--holds` (lag bound : actor lead pairs): the share of the
    owed updates run at 25/50/75/100% of the budget (`updates_share`)."""
    for hold in a.holds.split(","):
        bound, lead = (int(x) for x in hold.split(":"))
        for n in (1, 4):
            args = [*SAC_STATE, "--env-steps", "20000", "--actors", str(n), "--seed", "0",
                    "--max-policy-lag", str(bound), "--actor-lead", str(lead),
                    "--eval-every-env-steps", "0", "--eval-episodes", "2", *a.extra]
            result = run_train(args, os.path.join(base, f"b{bound}-l{lead}-a{n}"), a.timeout_s)
            record({"bench": "learning", "preset": "lag-ratio", **stamp, "actors": n,
                    "max_policy_lag": bound, "args": args, **summarise(result, None), **result},
                   a.out)
            print(f"bound {bound}, lead {lead}, {n} actor(s): updates run / owed {result['updates_share']}, "
                  f"lag p95 {result['policy_lag_updates_p95']} ({result['wall_s']:.0f} s)",
                  flush=True)
    return 0


def run_train(args: list[str], run_dir: str, timeout_s: float) -> dict:
    """One fpac-train run; its evaluations, wall-clock and settings."""
    cmd = [sys.executable, "-m", "deploy.train_cli", *args, "--run-dir", run_dir, "--no-gif",
           "--log-level", "WARNING"]
    start = time.time()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:  # killed (its actors die with it): keep what it wrote
        code, out, err = "timeout", str(e.stdout or ""), str(e.stderr or "")
    return collect(run_dir, code, start, out, err)


def collect(run_dir: str, code: int | str, start: float, out: str, err: str) -> dict:
    """A run directory's evaluations (seconds since `start`), settings, lag and update rate."""
    wall = time.time() - start
    evals = []
    path = os.path.join(run_dir, "evals.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            evals = [json.loads(line) for line in f]
    config, rows = run_files(run_dir)
    lags, ups, lag_p95, lag_max, refused = [], [], [], [], None
    if rows:
        lags = [r["policy_lag"] for r in rows if r.get("policy_lag") is not None]
        ups = [r["ups"] for r in rows if r.get("ups")]
        lag_p95 = [r["policy_lag_updates_p95"] for r in rows
                   if r.get("policy_lag_updates_p95") is not None]
        lag_max = [r["policy_lag_updates_max"] for r in rows
                   if r.get("policy_lag_updates_max") is not None]
        refused = rows[-1].get("policy_lag_refused")
    if code != 0:
        print(out[-3000:], err[-3000:], file=sys.stderr)
    return {"exit_code": code, "wall_s": round(wall, 1), "config": config,
            "policy_lag_mean": round(float(np.mean(lags)), 2) if lags else None,
            "updates_per_s_median": round(float(np.median(ups)), 2) if ups else None,
            "policy_lag_updates_p95": float(np.median(lag_p95)) if lag_p95 else None,
            "policy_lag_updates_max": max(lag_max) if lag_max else None,
            "policy_lag_refused": refused, "updates_share": updates_share(rows, config),
            "evals": [{"env_steps": e["env_steps"], "wall_s": round(e["time"] - start, 1),
                       "mean": round(e["mean_return"], 2), "std": round(e["std_return"], 2),
                       "episodes": len(e["returns"]), "final": e["final"]} for e in evals]}


def run_files(run_dir: str) -> tuple[dict, list[dict]]:
    """A run directory's config.json and its complete metrics.jsonl rows ([] before the first)."""
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(metrics):
        return config, []
    with open(metrics) as f:
        return config, [json.loads(line) for line in f if line.endswith("\n")]


def updates_share(rows: list[dict], config: dict) -> dict[str, float]:
    """Updates run / updates owed at the replay ratio, at 25/50/75/100% of the env-step budget
    (the first metrics row at or past each point). 1.0 is the authors' loop; less means actors
    stepped ahead and the owed updates come later (after the budget, at the latest)."""
    ratio, initial = config["replay"]["replay_ratio"], config["replay"]["initial_random_steps"]
    out = {}
    for pct in (25, 50, 75, 100):
        row = next((r for r in rows if r["env_steps"] >= config["env_steps"] * pct / 100), None)
        owed = int(ratio * (row["agent_steps"] - initial)) if row else 0
        if owed > 0:
            out[f"{pct}%"] = round(row["updates"] / owed, 3)
    return out


def record_run_dir(preset: str, run_dir: str, target: float | None, out: str, note: str) -> int:
    """Record a row from a run directory made by hand (module docstring): partial until its
    final evaluation is in; wall_s is the time of the last metrics row since the first."""
    if preset not in PRESETS:
        raise SystemExit(f"--from-run needs a preset of {', '.join(PRESETS)}")
    target = target if target is not None else PRESETS[preset]["target"]
    _, rows = run_files(run_dir)
    # Evaluations' wall_s count from the first metrics row (a resumed run's pause included).
    result = collect(run_dir, "from-run", rows[0]["time"] if rows else time.time(), "", "")
    result["wall_s"] = round(rows[-1]["time"] - rows[0]["time"], 1) if rows else None
    result["last_metrics"] = rows[-1] if rows else None
    summary = summarise(result, target)
    row = {"bench": "learning", "preset": preset, **provenance(), "run_dir": run_dir,
           "partial": summary["final_mean"] is None, "note": note,
           "args": PRESETS[preset]["args"], "target": target, **summary, **result}
    record(row, out)
    for e in result["evals"]:
        print(f"env {e['env_steps']:>7}  eval {e['mean']:8.1f} +- {e['std']:.1f}")
    print(f"recorded {'a partial' if row['partial'] else 'the final'} row in {out}")
    return 0


def summarise(result: dict, target: float | None) -> dict:
    evals = result["evals"]
    final = next((e for e in reversed(evals) if e["final"]), None)
    reached = next((e for e in evals if target is not None and e["mean"] >= target), None)
    return {"final_mean": final and final["mean"], "final_std": final and final["std"],
            "final_env_steps": final and final["env_steps"],
            "time_to_target_s": reached and reached["wall_s"],
            "env_steps_to_target": reached and reached["env_steps"]}


def record(row: dict, out: str) -> None:
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", required=True,
                   choices=[*PRESETS, "tiny-actors", "lag-actors", "lag-learning", "lag-ratio"])
    p.add_argument("--target", type=float, default=None, help="return for time-to-score")
    p.add_argument("--timeout-s", type=float, default=7200.0, help="per run")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "learning.jsonl"))
    p.add_argument("--seeds", default="0,1,2", help="lag-learning: seeds, comma-separated")
    p.add_argument("--runners", default="serial,actors-1,actors-4",
                   help="lag-learning: which of serial, actors-1, actors-4 to run")
    p.add_argument("--holds", default="100:0,0:0,0:200",
                   help="lag-ratio: lag bound:actor lead pairs, comma-separated")
    p.add_argument("--actors", default="", help="tiny-actors, lag-actors: actor counts (1,4)")
    p.add_argument("--keep", default="", help="directory to keep the run directories in")
    p.add_argument("--from-run", default="", metavar="DIR",
                   help="record the preset's row from this run directory (started by hand, "
                        "possibly stopped or still running) instead of running it")
    p.add_argument("--note", default="", help="free text stored with the row")
    p.add_argument("extra", nargs="*", help="flags for fpac-train (after --)")
    p.add_argument("--share-of", default="", metavar="RUN_DIR",
                   help="record only the updates run / owed along this (finished) run directory")
    a = p.parse_args()
    if a.share_of:
        config, rows = run_files(a.share_of)
        share = updates_share(rows, config)
        record({"bench": "learning", "preset": "updates-share", **provenance(),
                "run_dir": a.share_of, "note": a.note, "updates_share": share}, a.out)
        print(f"{a.share_of}: updates run / owed {share}")
        return 0
    if a.from_run:
        return record_run_dir(a.preset, a.from_run, a.target, a.out, a.note)
    base = a.keep or tempfile.mkdtemp(prefix="fpac-bench-")
    stamp = provenance()
    if a.preset in PRESETS:
        preset = PRESETS[a.preset]
        target = a.target if a.target is not None else preset["target"]
        result = run_train([*preset["args"], *a.extra], os.path.join(base, a.preset),
                           a.timeout_s)
        row = {"bench": "learning", "preset": a.preset, **stamp, "args": preset["args"] + a.extra,
               "target": target, **summarise(result, target), **result}
        record(row, a.out)
        for e in result["evals"]:
            print(f"env {e['env_steps']:>7}  t {e['wall_s']:>7.0f} s  eval {e['mean']:8.1f} "
                  f"+- {e['std']:.1f}{'  (final)' if e['final'] else ''}")
        print(f"final {row['final_mean']} at {row['final_env_steps']} env steps; wall "
              f"{result['wall_s']:.0f} s; time to {target}: {row['time_to_target_s']}")
        return 0 if result["exit_code"] == 0 else 1
    if a.preset == "lag-learning":
        return lag_learning(a, base, stamp)
    if a.preset == "lag-ratio":
        return lag_ratio(a, base, stamp)
    # tiny-actors: results must not depend on the number of actors (the replay ratio is
    # enforced by the learner), so the final eval should agree across columns within the spread.
    from deploy.serial import tiny_config  # noqa: PLC0415 (the settings the tiny task learns with)
    t = tiny_config()
    agent = ["--num-points", str(t.agent.num_points), "--hidden-dim", str(t.agent.hidden_dim),
             "--conv-channels", str(t.agent.conv_channels), "--batch-size",
             str(t.agent.batch_size), "--lr", str(t.agent.lr), "--initial-random-steps",
             str(t.replay.initial_random_steps), "--capacity", str(t.replay.capacity),
             "--weights-every", str(t.learner.weights_every)]
    table, lag_rows = {}, {}
    actors, seeds = (LAG_ACTORS, (0,)) if a.preset == "lag-actors" else (TINY_ACTORS, TINY_SEEDS)
    actors = [int(x) for x in a.actors.split(",")] if a.actors else actors
    for n in actors:
        finals = []
        for seed in seeds:
            args = ["--task", "point_reach", "--env-steps", "3000", "--gpus", "0", "--actors",
                    str(n), "--seed", str(seed), "--eval-every-env-steps", "1000", *agent,
                    *a.extra]
            result = run_train(args, os.path.join(base, f"tiny-a{n}-s{seed}"), a.timeout_s)
            summary = summarise(result, a.target)
            record({"bench": "learning", "preset": a.preset, **stamp, "actors": n,
                    "seed": seed, "args": args, **summary, **result}, a.out)
            finals.append(summary["final_mean"])
            lag_rows.setdefault(n, []).append(result)
            print(f"actors {n} seed {seed}: final eval {summary['final_mean']}, lag p95 "
                  f"{result['policy_lag_updates_p95']} max {result['policy_lag_updates_max']} "
                  f"updates ({result['wall_s']:.0f} s)", flush=True)
        table[n] = finals
    print("\n| actors | lag p95 (updates), per seed | lag max | refused records |\n|---|---|---|---|")
    for n, results in lag_rows.items():
        print(f"| {n} | {[r['policy_lag_updates_p95'] for r in results]} | "
              f"{[r['policy_lag_updates_max'] for r in results]} | "
              f"{[r['policy_lag_refused'] for r in results]} |")
    print("\n| actors | final eval, mean +- std over seeds | runs |\n|---|---|---|")
    for n, finals in table.items():
        xs = np.array([x for x in finals if x is not None], float)
        print(f"| {n} | {xs.mean():.2f} +- {xs.std():.2f} | {len(xs)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
