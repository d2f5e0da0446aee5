"""A Slurm array job for a grid: one array task per run not yet DONE.

Each array task runs `python -m studies.experiment run-one --grid GRID --run TASK/AGENT/seed-S`,
which does what the local runner does for that run: skip it if DONE, `fpac-train --resume` it
if it has a checkpoint, else start it; then write DONE. So a job stopped by its time limit
(Slurm sends SIGTERM `--signal` seconds before: the learner checkpoints) is continued by
generating and submitting the script again. The script's comments list each run's fpac-train
command as it stood when the script was written.
"""
from __future__ import annotations

import datetime
import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import Sequence

from studies.grid import GridSpec, Run, train_command

SCRIPT = "slurm-array.sbatch"


@dataclass
class SlurmOptions:
    time: str = "48:00:00"
    partition: str = ""
    gpus: int = 1
    mem: str = ""
    max_parallel: int = 0  # 0: no limit on simultaneous array tasks
    signal_s: int = 300  # SIGTERM this long before the time limit: the learner checkpoints
    extra: list[str] = field(default_factory=list)  # more '#SBATCH' options, e.g. '--account=x'


def sbatch_script(root: str, spec: GridSpec, runs: Sequence[Run], opts: SlurmOptions,
                  python: str = sys.executable) -> str:
    """The array script's text for `runs` (index i of the array runs runs[i])."""
    if not runs:
        raise ValueError("no runs left to submit: every run of the grid is DONE")
    root = os.path.abspath(root)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    name = "fpac-" + os.path.basename(root.rstrip("/"))
    array = f"0-{len(runs) - 1}" + (f"%{opts.max_parallel}" if opts.max_parallel > 0 else "")
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name={name}",
             f"#SBATCH --array={array}",
             f"#SBATCH --cpus-per-task={spec.actors_per_run + 1}",
             f"#SBATCH --time={opts.time}",
             f"#SBATCH --output={os.path.join(root, 'slurm', '%A_%a.out')}",
             f"#SBATCH --signal=B:TERM@{opts.signal_s}"]
    if opts.gpus > 0:
        lines.append(f"#SBATCH --gres=gpu:{opts.gpus}")
    if opts.partition:
        lines.append(f"#SBATCH --partition={opts.partition}")
    if opts.mem:
        lines.append(f"#SBATCH --mem={opts.mem}")
    lines += [f"#SBATCH {o}" for o in opts.extra]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines += ["", f"# Written by fpac-experiment slurm at {stamp} for the grid {root}:",
              f"# {len(runs)} runs not DONE then. Submit with: sbatch {os.path.join(root, SCRIPT)}",
              "# The fpac-train command of each array task at that time:"]
    lines += [f"#   [{i}] {shlex.join(train_command(r, spec, python))}" for i, r in enumerate(runs)]
    lines += ["", "set -euo pipefail", "RUNS=("]
    lines += [f"  {shlex.quote(r.key)}" for r in runs]
    lines += [")",
              f"cd {shlex.quote(repo)}",
              "export MUJOCO_GL=${MUJOCO_GL:-egl}",
              f"exec {shlex.quote(python)} -m studies.experiment run-one --grid {shlex.quote(root)} "
              '--run "${RUNS[$SLURM_ARRAY_TASK_ID]}"', ""]
    return "\n".join(lines)


def write_script(root: str, text: str) -> str:
    os.makedirs(os.path.join(root, "slurm"), exist_ok=True)
    path = os.path.join(root, SCRIPT)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o755)
    return path
