"""A real fpac-experiment grid on the tiny task, for the README's example figure: point_reach x
{fpac, sac-state} x 3 seeds, run through `python -m studies.experiment run`, then its figure,
table and scores copied to bench/results/experiment-<name>.{png,md,json} and one row with the
provenance, the settings and the scores appended to bench/results/experiment.jsonl.

    python bench/bench_experiment.py [--grid DIR] [--env-steps 2500] [--seeds 0-2] [--parallel 2]

A stopped run of this script continues where it stopped when given the same --grid.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.provenance import ROOT, provenance  # noqa: E402

RESULTS = os.path.join(ROOT, "bench", "results")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", default=os.path.join(ROOT, "runs", "experiment-tiny"))
    p.add_argument("--name", default="point_reach")
    p.add_argument("--agents", default="fpac,sac-state")
    p.add_argument("--seeds", default="0-2")
    p.add_argument("--env-steps", type=int, default=2500)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--at", default="1000,2500", help="the table's columns (env steps)")
    p.add_argument("--machine-shared", action=argparse.BooleanOptionalAction, default=True,
                   help="other work ran on this machine meanwhile (wall-clock not clean)")
    args = p.parse_args()
    cmd = [sys.executable, "-m", "studies.experiment", "run", "--grid", args.grid,
           "--tasks", "point_reach", "--agents", args.agents, "--seeds", args.seeds,
           "--env-steps", str(args.env_steps), "--parallel", str(args.parallel),
           "--train-flags", f"--eval-every-env-steps {args.eval_every}", "--at", args.at,
           "--title", f"fpac-experiment on point_reach: {args.agents} x seeds {args.seeds}"]
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, check=False)
    wall = time.time() - start
    if proc.returncode != 0:
        print(f"bench_experiment: the grid exited {proc.returncode}; nothing recorded",
              file=sys.stderr)
        return proc.returncode
    figures = os.path.join(args.grid, "figures")
    base = os.path.join(RESULTS, f"experiment-{args.name}")
    for src, ext in (("curves.png", "png"), ("table.md", "md"), ("scores.json", "json")):
        shutil.copyfile(os.path.join(figures, src), f"{base}.{ext}")
    with open(f"{base}.json", encoding="utf-8") as f:
        scores = json.load(f)
    # Each run's own wall-clock and state from the grid's log (the latest end of each run): a
    # second call on a finished grid only re-plots, and says so here.
    runs: dict[str, dict] = {}
    with open(os.path.join(args.grid, "experiment.log"), encoding="utf-8") as f:
        for line in f:
            e = json.loads(line)
            if e["event"] == "end":
                runs.setdefault(e["run"], {}).update(seconds=e["seconds"], done=e["done"])
            elif e["event"] == "start":
                runs.setdefault(e["run"], {})["started_in_this_call"] = e["time"] >= start
    row = {"bench": "experiment", **provenance(), "name": args.name, "command": cmd[1:],
           "settings": {"task": "point_reach", "agents": args.agents, "seeds": args.seeds,
                        "env_steps": args.env_steps, "eval_every_env_steps": args.eval_every,
                        "parallel": args.parallel, "actors_per_run": 1,
                        "machine_shared": args.machine_shared},
           "wall_s": round(wall, 1), "runs": runs, "scores": scores,
           "files": [os.path.relpath(f"{base}.{e}", ROOT) for e in ("png", "md", "json")]}
    with open(os.path.join(RESULTS, "experiment.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    print(open(f"{base}.md", encoding="utf-8").read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
