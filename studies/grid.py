"""An experiment grid: tasks x agents x seeds, one fpac-train run each, in a directory of its own.

    GRID/grid.json                      the grid (tasks, agents with their flags, seeds, budget)
    GRID/experiment.log                 one JSON line per run started / ended (what was (re)done)
    GRID/<task>/<agent>/seed-<S>/       the run's fpac-train run directory, plus
        DONE                            written once the run exited 0 with its final evaluation
        train.out                       fpac-train's console output (appended on resume)

A run's state comes from its directory alone, so a stopped grid resumes anywhere (this machine,
a Slurm array): DONE -> skip; a checkpoint -> `fpac-train --resume`; anything else -> start
afresh (a directory left without a checkpoint is first moved aside, never deleted).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Sequence

from fpac_async.tasks import TASKS
from learner.run_dir import final_eval  # one reader of evals.jsonl (issue 20)

GRID_FILE = "grid.json"
LOG_FILE = "experiment.log"
DONE = "DONE"
CONSOLE = "train.out"


class GridError(ValueError):
    """A grid that cannot be made or resumed as asked; the message says why."""


@dataclass
class GridSpec:
    tasks: list[str]
    agents: dict[str, list[str]]  # name -> fpac-train flags, as resolved when the grid was made
    seeds: list[int]
    env_steps: int | None = None  # None: fpac-train's default budget
    train_flags: list[str] = field(default_factory=list)  # added to every run
    actors_per_run: int = 1

    def runs(self, root: str) -> list[Run]:
        return [Run(root, t, a, s) for t in self.tasks for a in self.agents for s in self.seeds]


@dataclass(frozen=True)
class Run:
    root: str
    task: str
    agent: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.task}/{self.agent}/seed-{self.seed}"

    @property
    def dir(self) -> str:
        return os.path.join(self.root, self.task, self.agent, f"seed-{self.seed}")

    def state(self) -> str:
        """'done', 'resume' (a checkpoint to continue from) or 'new'."""
        if os.path.exists(os.path.join(self.dir, DONE)):
            return "done"
        if os.path.exists(os.path.join(self.dir, "checkpoints", "latest")):
            return "resume"
        return "new"


def expand_tasks(names: Sequence[str]) -> list[str]:
    """Task names; a benchmark name ('planet', 'dreamer') stands for all of its tasks."""
    out: list[str] = []
    for name in names:
        members = [name] if name in TASKS else [t for t, s in TASKS.items() if s.benchmark == name]
        if not members:
            benchmarks = sorted({s.benchmark for s in TASKS.values()})
            raise GridError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}; "
                            f"benchmarks: {', '.join(benchmarks)}")
        out += [m for m in members if m not in out]
    return out


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' or '0-4' (inclusive) or a mix: '0-2,7'."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise GridError(f"--seeds {text!r}: expected numbers like 0,1,2 or 0-4") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise GridError(f"--seeds {text!r}: expected distinct seeds >= 0")
    return seeds


def save_spec(root: str, spec: GridSpec) -> None:
    os.makedirs(root, exist_ok=True)
    tmp = os.path.join(root, GRID_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(dataclasses.asdict(spec), f, indent=2)
        f.write("\n")
    os.replace(tmp, os.path.join(root, GRID_FILE))


def load_spec(root: str) -> GridSpec | None:
    path = os.path.join(root, GRID_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return GridSpec(**json.load(f))
    except (OSError, json.JSONDecodeError, TypeError) as e:
        raise GridError(f"cannot read {path}: {e}") from e


def merge_spec(old: GridSpec | None, new: GridSpec | None, root: str) -> GridSpec:
    """The grid to run: the stored one, the new one, or an error if they differ (a grid's runs
    must all come from one setting; start another GRID directory instead)."""
    if old is None and new is None:
        raise GridError(f"{root} holds no {GRID_FILE}: give --tasks, --agents and --seeds")
    if old is None or new is None:
        return old or new  # type: ignore[return-value]
    if old != new:
        a, b = dataclasses.asdict(old), dataclasses.asdict(new)
        diff = [f"{k}: {a[k]} (stored) vs {b[k]} (given)" for k in a if a[k] != b[k]]
        raise GridError(f"{root} was made with other settings ({'; '.join(diff)}); run "
                        f"`fpac-experiment run --grid {root}` alone to resume it, or use "
                        f"another --grid directory")
    return old


def train_command(run: Run, spec: GridSpec, python: str = sys.executable) -> list[str]:
    """The fpac-train command of `run` in its current state (a fresh start or --resume)."""
    base = [python, "-m", "deploy.train_cli"]
    common = ["--actors", str(spec.actors_per_run), "--no-gif"]
    if run.state() == "resume":  # the config comes from the run's config.json
        return [*base, "--resume", run.dir, *common]
    budget = ["--env-steps", str(spec.env_steps)] if spec.env_steps is not None else []
    return [*base, "--task", run.task, "--seed", str(run.seed), "--run-dir", run.dir, *budget,
            *common, *spec.agents[run.agent], *spec.train_flags]


def set_aside(run: Run) -> str | None:
    """Move a run directory without a checkpoint (a run that died early) to seed-S.failed-N."""
    if not os.path.exists(run.dir):
        return None
    n = 1
    while os.path.exists(f"{run.dir}.failed-{n}"):
        n += 1
    os.replace(run.dir, f"{run.dir}.failed-{n}")
    return f"{run.dir}.failed-{n}"


def mark_done(run: Run, code: int) -> bool:
    """Write DONE if the run finished (exit 0 and a final evaluation); True if it did."""
    rec = final_eval(run.dir)
    if code != 0 or rec is None:
        return False
    with open(os.path.join(run.dir, DONE), "w", encoding="utf-8") as f:
        json.dump({"exit_code": code, "final_env_steps": rec.get("env_steps"),
                   "final_return": rec.get("mean_return"), "time": time.time()}, f)
        f.write("\n")
    return True


def log_event(root: str, **event) -> None:
    with open(os.path.join(root, LOG_FILE), "a", encoding="utf-8") as f:
        f.write(json.dumps({"time": time.time(), **event}) + "\n")
