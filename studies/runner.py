"""Runs a grid's unfinished runs on this machine, K at a time, each as its own fpac-train process.

- K (--parallel) defaults to the cores over the cores one run takes (its actors + its learner).
- A run is done when fpac-train exits 0 with its final evaluation in evals.jsonl: DONE is written.
  A run that fails is reported and left as it is (its checkpoint, if any, resumes next time);
  the other runs go on.
- SIGINT / SIGTERM: no new runs start; the signal is passed to the running ones (each learner
  checkpoints, docs/INTERFACES.md), they are waited for, and the exit code is 128 + signal.
  Running the grid again resumes them.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

from studies.grid import CONSOLE, GridSpec, Run, log_event, mark_done, set_aside, train_command

log = logging.getLogger("fpac-experiment")

POLL_S = 0.5


def default_parallel(cpu_count: int | None, actors_per_run: int) -> int:
    """Runs at a time: each takes a core per actor and one for its learner."""
    return max(1, (cpu_count or 1) // (actors_per_run + 1))


def start_run(run: Run, spec: GridSpec, python: str = sys.executable) -> subprocess.Popen:
    """Start `run` (afresh or resumed, from its directory's state); its console goes to train.out."""
    state = run.state()
    if state == "new":
        moved = set_aside(run)
        if moved:
            log.warning("%s: no checkpoint to resume from; its directory was moved to %s",
                        run.key, moved)
    cmd = train_command(run, spec, python)
    os.makedirs(run.dir, exist_ok=True)
    log_event(run.root, event="start", run=run.key, action=state, command=cmd)
    out = open(os.path.join(run.dir, CONSOLE), "a", encoding="utf-8")  # noqa: SIM115
    try:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                start_new_session=True)  # signals reach it only through us
    finally:
        out.close()


def finish_run(run: Run, code: int, seconds: float) -> bool:
    done = mark_done(run, code)
    log_event(run.root, event="end", run=run.key, exit_code=code, done=done,
              seconds=round(seconds, 1))
    return done


class GridRunner:
    """Keeps up to `parallel` runs going until every run of the grid is done, failed or stopped."""

    def __init__(self, root: str, spec: GridSpec, parallel: int, python: str = sys.executable,
                 runs: list[Run] | None = None):
        if parallel < 1:
            raise ValueError("--parallel must be >= 1")
        self.root, self.spec, self.parallel, self.python = root, spec, parallel, python
        self.runs = spec.runs(root) if runs is None else runs
        self.stop_signal: int | None = None
        self.active: dict[Run, tuple[subprocess.Popen, float]] = {}

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.stop_signal is None:
            log.warning("signal %d: stopping %d running runs (each checkpoints)", signum,
                        len(self.active))
        self.stop_signal = signum
        for proc, _ in self.active.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    def run(self) -> dict[str, list[str]]:
        """{'done': [...], 'failed': [...], 'skipped': [...], 'stopped': [...]} by run key."""
        result: dict[str, list[str]] = {"done": [], "failed": [], "skipped": [], "stopped": []}
        pending = []
        for run in self.runs:
            if run.state() == "done":
                log_event(self.root, event="skip", run=run.key, reason="DONE")
                result["skipped"].append(run.key)
            else:
                pending.append(run)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while pending or self.active:
                while pending and len(self.active) < self.parallel and self.stop_signal is None:
                    run = pending.pop(0)
                    log.info("start %s (%s)", run.key, run.state())
                    self.active[run] = (start_run(run, self.spec, self.python), time.monotonic())
                for run, (proc, t0) in list(self.active.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    del self.active[run]
                    done = finish_run(run, code, time.monotonic() - t0)
                    kind = "done" if done else ("stopped" if self.stop_signal else "failed")
                    result[kind].append(run.key)
                    log.info("%s %s (exit code %d; console: %s)", kind, run.key, code,
                             os.path.join(run.dir, CONSOLE))
                if self.stop_signal is not None:
                    result["stopped"] += [r.key for r in pending]
                    pending = []
                time.sleep(POLL_S)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
        return result
