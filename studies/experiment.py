"""`fpac-experiment`: a grid of fpac-train runs (tasks x agents x seeds) and its paper-style figures.

    fpac-experiment run --grid GRID --tasks planet --agents fig2 --seeds 0-5 [--parallel K]
    fpac-experiment run --grid GRID                      # resume: redoes no finished run
    fpac-experiment slurm --grid GRID --tasks ... [--time 48:00:00 --partition gpu]
    fpac-experiment plot --grid GRID [--at 100000,500000]
    fpac-experiment status --grid GRID | agents

Agents are named flag presets (studies/agents.json; `fpac-experiment agents` lists them), checked
with `fpac-train --print-config` before anything starts. Layout and resume rules: studies/grid.py.
Figures: GRID/figures/curves.png, table.md, scores.json (studies/figures.py, studies/table.py);
the table's columns follow the grid's budget unless --at says otherwise.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from fpac_async.cli_parser import FpacParser
from typing import Sequence

from studies import agents as agents_mod
from studies.curves import read_curve
from studies.grid import GridError, GridSpec, expand_tasks, load_spec, merge_spec, \
    parse_seeds, save_spec
from studies.references import load_references
from studies.runner import GridRunner, default_parallel

log = logging.getLogger("fpac-experiment")


def _grid_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grid", required=True, help="the grid's directory")
    p.add_argument("--tasks", help="comma-separated tasks or benchmarks (planet, dreamer, tiny)")
    p.add_argument("--agents", help="comma-separated agents or groups (fig2, fig8, ...)")
    p.add_argument("--seeds", help="seeds: 0,1,2 or 0-5")
    p.add_argument("--env-steps", type=int, default=None,
                   help="budget per run (default: fpac-train's)")
    p.add_argument("--actors-per-run", type=int, default=1, help="actor processes per run")
    p.add_argument("--train-flags", default="",
                   help="more fpac-train flags for every run, one quoted string")
    p.add_argument("--agents-file", default=None,
                   help="a JSON file of more agents (the format of studies/agents.json)")


def _plot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--at", default=None,
                   help="env steps of the table's columns and the reference markers (default: "
                        "100000,500000 as far as the grid's budget reaches, and the budget)")
    p.add_argument("--title", default="", help="figure title")


def build_parser() -> argparse.ArgumentParser:
    parser = FpacParser(prog="fpac-experiment", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) the grid here, then plot it")
    _grid_args(run)
    run.add_argument("--parallel", type=int, default=None,
                     help="runs at a time (default: cores // (actors per run + 1))")
    run.add_argument("--no-plot", action="store_true", help="do not draw the figures at the end")
    _plot_args(run)
    slurm = sub.add_parser("slurm", help="write a Slurm array script of the runs not DONE")
    _grid_args(slurm)
    slurm.add_argument("--time", default="48:00:00", help="time limit per run")
    slurm.add_argument("--partition", default="", help="Slurm partition")
    slurm.add_argument("--gpus", type=int, default=1, help="GPUs per run (0: none)")
    slurm.add_argument("--mem", default="", help="memory per run, e.g. 32G")
    slurm.add_argument("--max-parallel", type=int, default=0, help="array tasks at a time")
    slurm.add_argument("--sbatch-option", action="append", default=[],
                       help="another #SBATCH option, e.g. --account=x (repeatable)")
    one = sub.add_parser("run-one", help="run one run of a stored grid (a Slurm array task)")
    one.add_argument("--grid", required=True)
    one.add_argument("--run", required=True, help="TASK/AGENT/seed-S")
    plot = sub.add_parser("plot", help="draw the figure and the table of a grid's runs")
    plot.add_argument("--grid", required=True)
    plot.add_argument("--out", default=None, help="output directory (default GRID/figures)")
    _plot_args(plot)
    status = sub.add_parser("status", help="the state of every run of a grid")
    status.add_argument("--grid", required=True)
    sub.add_parser("agents", help="list the named agents and groups")
    return parser


def grid_spec(args: argparse.Namespace) -> GridSpec:
    """The grid to run: the stored GRID/grid.json, the one the flags describe, or both if equal.
    Every agent is checked against fpac-train before anything is written."""
    stored = load_spec(args.grid)
    given = None
    if args.tasks or args.agents or args.seeds:
        if not (args.tasks and args.agents and args.seeds):
            raise GridError("a new grid needs --tasks, --agents and --seeds")
        cat = agents_mod.load_catalogue(args.agents_file)
        names = cat.expand([a.strip() for a in args.agents.split(",") if a.strip()])
        given = GridSpec(tasks=expand_tasks([t.strip() for t in args.tasks.split(",")]),
                         agents={n: list(cat.agents[n].flags) for n in names},
                         seeds=parse_seeds(args.seeds), env_steps=args.env_steps,
                         train_flags=shlex.split(args.train_flags),
                         actors_per_run=args.actors_per_run)
        if given.actors_per_run < 1:
            raise GridError("--actors-per-run must be >= 1")
    spec = merge_spec(stored, given, args.grid)
    # Stored agents are checked again (the installed fpac-train may have changed since), but
    # only those with runs to start afresh: a resumed run takes its config from its config.json.
    cat = agents_mod.load_catalogue(getattr(args, "agents_file", None))
    known = agents_mod.Catalogue()
    for name, flags in spec.agents.items():
        agent = cat.agents.get(name)  # keeps its 'needs' and 'requires' for the messages
        known.agents[name] = agent if agent and list(agent.flags) == flags else \
            agents_mod.Agent(name, tuple(flags))
    fresh = [(r.task, r.agent) for r in spec.runs(args.grid) if r.state() == "new"]
    agents_mod.check_agents(known, list(dict.fromkeys(fresh)), spec.train_flags)
    if stored is None:
        save_spec(args.grid, spec)
    return spec


def collect(root: str, spec: GridSpec) -> dict[tuple[str, str], list]:
    """Each (task, agent)'s curves, one per seed that has evaluations."""
    out: dict[tuple[str, str], list] = {}
    for run in spec.runs(root):
        curve = read_curve(run.dir)
        out.setdefault((run.task, run.agent), [])
        if curve:
            out[(run.task, run.agent)].append(curve)
    return out


def _first_config(root: str, spec: GridSpec) -> dict | None:
    for run in spec.runs(root):
        path = os.path.join(run.dir, "config.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                return json.load(f)
    return None


def eval_step(root: str, spec: GridSpec) -> float | None:
    """The evaluation interval of the grid's first run with a config (the mean curves' x grid)."""
    cfg = _first_config(root, spec)
    return None if cfg is None else float(cfg["learner"]["eval_every_env_steps"])


def grid_budget(root: str, spec: GridSpec) -> int | None:
    """The grid's env-step budget: --env-steps, else its first run's config (None: unknown)."""
    if spec.env_steps is not None:
        return int(spec.env_steps)
    cfg = _first_config(root, spec)
    return None if cfg is None else int(cfg["env_steps"])


def plot(root: str, spec: GridSpec, at: Sequence[int] | None, out: str | None,
         title: str) -> list[str]:
    """Figures of the grid; `at` None: the columns follow the grid's budget (default_columns)."""
    from studies.figures import plot_grid  # noqa: PLC0415 (matplotlib only when plotting)
    from studies.table import default_columns, write_table  # noqa: PLC0415

    at = list(at) if at else default_columns(grid_budget(root, spec))
    out = out or os.path.join(root, "figures")
    os.makedirs(out, exist_ok=True)
    curves, refs = collect(root, spec), load_references()
    fig = plot_grid(os.path.join(out, "curves.png"), curves, spec.tasks, list(spec.agents), refs,
                    at, eval_step(root, spec), title)
    return [fig, *write_table(out, curves, at, refs)]


def _at(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(float(x)) for x in text.split(",") if x.strip()]
    except ValueError:
        raise GridError(f"--at {text!r}: expected env steps like 100000,500000") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        return _main(args)
    except (GridError, agents_mod.AgentError) as e:
        print(f"fpac-experiment: {e}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    if args.command == "agents":
        cat = agents_mod.load_catalogue()
        for a in cat.agents.values():
            print(f"{a.name:26s} {' '.join(a.flags) or '(defaults)':28s} {a.figure}: {a.about}")
        for g, members in cat.groups.items():
            print(f"group {g}: {', '.join(members)}")
        return 0
    if args.command in ("plot", "status", "run-one"):
        spec = load_spec(args.grid)
        if spec is None:
            raise GridError(f"{args.grid} holds no grid.json")
        if args.command == "status":
            for run in spec.runs(args.grid):
                print(f"{run.state():7s} {run.key}")
            return 0
        if args.command == "plot":
            for path in plot(args.grid, spec, _at(args.at), args.out, args.title):
                print(path)
            return 0
        runs = [r for r in spec.runs(args.grid) if r.key == args.run]
        if not runs:
            raise GridError(f"{args.run!r} is not a run of {args.grid}")
        runner = GridRunner(args.grid, spec, 1, runs=runs)
        result = runner.run()
        if runner.stop_signal is not None:
            return 128 + runner.stop_signal
        return 1 if result["failed"] else 0
    spec = grid_spec(args)
    if args.command == "slurm":
        from studies.slurm import SlurmOptions, sbatch_script, write_script  # noqa: PLC0415

        todo = [r for r in spec.runs(args.grid) if r.state() != "done"]
        if not todo:
            print(f"every run of {args.grid} is DONE; nothing to submit")
            return 0
        opts = SlurmOptions(args.time, args.partition, args.gpus, args.mem, args.max_parallel,
                            extra=args.sbatch_option)
        path = write_script(args.grid, sbatch_script(args.grid, spec, todo, opts))
        print(f"{len(todo)} runs: sbatch {path}")
        return 0
    parallel = args.parallel or default_parallel(os.cpu_count(), spec.actors_per_run)
    runner = GridRunner(args.grid, spec, parallel)
    result = runner.run()
    print(f"fpac-experiment: {len(result['done'])} runs finished, {len(result['skipped'])} were "
          f"already DONE, {len(result['failed'])} failed, {len(result['stopped'])} stopped")
    for key in result["failed"]:
        print(f"  failed: {key} (see {os.path.join(args.grid, key, 'train.out')})")
    if not args.no_plot:
        for path in plot(args.grid, spec, _at(args.at), None, args.title):
            print(path)
    if runner.stop_signal is not None:
        return 128 + runner.stop_signal
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
