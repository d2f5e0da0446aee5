"""What the CLIs (fpac-learner, fpac-train) know about a run directory before and after a run.

Issue 20:
- `made_by_us` / `remove_if_unstarted`: a run that could not start (exit code 2: an address in
  use, a bad config) leaves no half-made run directory behind. Only a directory this process
  created is removed, and only while it holds nothing but the learner's log.
- `finished`: a run whose final evaluation is recorded in evals.jsonl at (or past) the env-step
  budget is finished; `--resume` of it says so and does nothing (before, it re-ran the final
  evaluation and appended a second row). `final_eval` is also studies.grid's (a grid run is
  DONE with it).
"""
from __future__ import annotations

import json
import logging
import os
import shutil

STARTUP_FILES = {"learner.log"}  # what setup_logging writes before the learner binds


def made_by_us(run_dir: str) -> bool:
    """True if run_dir does not exist yet (so this process will create it)."""
    return not os.path.exists(run_dir)


def remove_if_unstarted(run_dir: str) -> bool:
    """Remove run_dir (created by this process) if it holds only start-up files; closes the
    root logger's file handlers into it first. True if it was removed."""
    try:
        names = set(os.listdir(run_dir))
    except FileNotFoundError:
        return False
    if not names <= STARTUP_FILES:
        return False
    root = logging.getLogger()
    inside = os.path.abspath(run_dir) + os.sep
    for handler in list(root.handlers):
        path = getattr(handler, "baseFilename", None)
        if path is not None and os.path.abspath(path).startswith(inside):
            root.removeHandler(handler)
            handler.close()
    shutil.rmtree(run_dir, ignore_errors=True)
    return not os.path.exists(run_dir)


def final_eval(run_dir: str) -> dict | None:
    """The last final evaluation recorded in run_dir/evals.jsonl, or None."""
    path = os.path.join(run_dir, "evals.jsonl")
    if not os.path.exists(path):
        return None
    last = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of a killed learner
            if rec.get("final"):
                last = rec
    return last


def finished(run_dir: str, budget_env_steps: int) -> str | None:
    """A one-line explanation if the run in run_dir is finished for this budget, else None."""
    rec = final_eval(run_dir)
    if rec is None:
        return None
    steps = rec.get("learner_env_steps") or rec.get("env_steps") or 0
    if int(steps) < int(budget_env_steps):
        return None
    ret = rec.get("mean_return")
    ret_s = f"{ret:.2f}" if isinstance(ret, (int, float)) else "unknown"
    return (f"{run_dir} is finished: its final evaluation (return {ret_s}) was recorded "
            f"at {int(steps)} env steps, budget {int(budget_env_steps)}; nothing to do "
            f"(pass a larger --env-steps to train it further)")
