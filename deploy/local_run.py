"""A learner and N actor processes on this machine over loopback: the wiring behind `fpac-train`.

Process layout (why the learner runs in THIS process): the learner owns the GPU, the run
directory and the signal handling (LearnerService checkpoints on SIGTERM/SIGINT when it runs in the
main thread), so running it here needs no extra process, no forwarding of signals and no second
copy of torch/CUDA. The actors are the Supervisor's spawned children; the Supervisor is driven
(start / poll / shutdown) from a watcher thread here instead of its own `run()`, because `run()`
installs signal handlers, which only the main thread may do and which the learner needs.

- Ctrl-C reaches the whole process group: the actors ignore SIGINT, the learner checkpoints and
  returns 128 + signal, then every actor is terminated (a stopped run's actors would otherwise
  wait for a resumed learner forever). SIGTERM to this process does the same.
- One evaluator process runs the evaluation episodes (actors/eval_loop.py), so evaluations never
  pause the training actors; like an actor it is restarted if it crashes.
- A crashed actor is restarted by Supervisor.poll (rate-limited). If every actor slot is given
  up, the learner is asked to stop (checkpoint) since no data can arrive any more.
- If the learner returns for any reason, the actors are stopped; if this process dies outright,
  the actors die with it (PR_SET_PDEATHSIG in actors.supervisor).
- Progress: the learner's metric rows (metrics.jsonl) are tailed and printed as
  learner.progress's line (budget, fraction done, ETA from the update rate), the line
  fpac-learner prints itself.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, TextIO

from actors.supervisor import Supervisor
from fpac_async.wire.auth import DEFAULT_ACTOR_KEY, export_client_keys
from fpac_async.config import RunConfig
from learner.progress import Progress
from learner.service import LearnerService

log = logging.getLogger("fpac-train")

STOP_GRACE_S = 5.0  # after a normal end: time for actors to exit on the learner's `stop`


def default_actor_count(cpu_count: int | None, gpu: bool) -> int:
    """Actors for this machine: one core each, leaving the learner one core with a GPU (it only
    feeds the GPU) or half the cores without one (the SAC updates then run on the CPU)."""
    cores = cpu_count or 1
    return max(1, cores - 1 if gpu else cores // 2)


def connect_address(bind: str) -> str:
    """The HOST:PORT actors on this machine use to reach a learner bound at `bind`."""
    host_port = bind.split("://", 1)[-1]
    host, _, port = host_port.rpartition(":")
    if host in ("*", "0.0.0.0", ""):
        host = "127.0.0.1"
    return f"{host}:{port}"


class ProgressPrinter:
    """Prints each new metrics.jsonl row as learner.progress's line (the line fpac-learner
    prints: '[ 42.0%] 4.2k/10.0k env steps | <status> | updates N | eta ...')."""

    def __init__(self, run_dir: str, progress: Progress, stream: TextIO | None = None) -> None:
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.progress = progress
        self.stream = stream or sys.stdout
        # A resumed run appends: only rows written from now on are news.
        self._offset = os.path.getsize(self.path) if os.path.exists(self.path) else 0
        self.last_row: dict[str, Any] | None = None

    def poll(self) -> None:
        rows = self._new_rows()
        for row in rows:  # every row: the ETA's update rate starts at the first one
            line = self.progress.line(row)
        if rows:
            self.last_row = rows[-1]
            self.stream.write(line + "\n")
            self.stream.flush()

    def _new_rows(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        with open(self.path, encoding="utf-8") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind("\n") + 1  # a row still being written is read next time
        self._offset += len(data[:end].encode("utf-8"))
        rows = []
        for line in data[:end].splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows


class LocalRun:
    """One local run; `run()` blocks until it ends and returns the learner's exit code
    (0 done, 2 could not start, 128 + signal when stopped, 1 failure)."""

    def __init__(self, cfg: RunConfig, actors: int, resume: bool = False,
                 progress: bool = True, poll_s: float = 0.2, auth_dir: str | None = None,
                 auth_key: str = DEFAULT_ACTOR_KEY) -> None:
        """auth_dir: a fpac-keys directory: the learner runs CURVE (fpac-learner --auth) and the
        actors and evaluator use key `auth_key` (exported to their environment; AuthError now if
        a key is missing)."""
        if actors < 1:
            raise ValueError(f"--actors must be >= 1; got {actors}")
        export_client_keys(auth_dir, auth_key)
        self.cfg = cfg
        self.actors = actors
        self.resume = resume
        self.poll_s = poll_s
        self.service = LearnerService(cfg, resume=resume, console=False, auth_dir=auth_dir)
        # One evaluator process beside the actors: evaluations never pause training.
        evaluators = int(cfg.learner.eval_every_env_steps > 0 and cfg.learner.eval_episodes > 0)
        self.supervisor = Supervisor(actors, cfg.env, connect_address(cfg.learner.bind),
                                     seed=cfg.seed, stats_every_s=float("inf"),
                                     frame_stack=cfg.agent.frame_stack,
                                     encoder=cfg.agent.encoder, evaluators=evaluators,
                                     eval_episodes=cfg.learner.eval_episodes)
        self.progress = ProgressPrinter(cfg.run_dir, Progress.of(cfg)) if progress else None
        self.actors_gave_up = False
        self._done = threading.Event()

    def run(self) -> int:
        # Actors start first: their spawn + imports overlap the learner's set-up, and they send
        # hello every second until the learner answers with its policy.
        self.supervisor.start()
        watcher = threading.Thread(target=self._watch, name="fpac-watch", daemon=True)
        watcher.start()
        code = 1
        try:
            code = self.service.run()
        finally:
            self._done.set()
            watcher.join(timeout=5.0)
            self._stop_actors(graceful=code == 0)
            if self.progress is not None:
                self.progress.poll()  # the learner's last row
        return code

    def _watch(self) -> None:
        """Restart crashed actors, print progress, stop the learner if no actor is left. A failure
        in this thread stops the run (with a checkpoint) instead of silently ending supervision."""
        try:
            self._watch_loop()
        except Exception:  # noqa: BLE001 - reported, then the learner stops and checkpoints
            log.exception("the actor watcher failed: stopping the learner")
            self.service.request_stop(signal.SIGTERM)

    def _watch_loop(self) -> None:
        while not self._done.wait(self.poll_s):
            self.supervisor.poll()
            if self.progress is not None:
                self.progress.poll()
            evaluators = [s for s in self.supervisor.slots if s.role == "evaluator"]
            if evaluators and all(s.state in ("failed", "refused") for s in evaluators):
                log.error("the evaluator was given up (see the errors above): no evaluation can "
                          "complete; stopping the learner, which writes a checkpoint")
                self.service.request_stop(signal.SIGTERM)
                return
            slots = [s for s in self.supervisor.slots if s.role == "actor"]
            if not any(s.state in ("running", "backoff") for s in slots):  # backoff: restarts soon
                if not any(s.state == "done" for s in slots):
                    log.error("every actor was given up (see the errors above): stopping the "
                              "learner, which writes a checkpoint")
                    self.actors_gave_up = True
                    self.service.request_stop(signal.SIGTERM)
                return

    def _stop_actors(self, graceful: bool) -> None:
        """After `stop` (graceful) the actors exit 0 on their own; otherwise terminate them."""
        if graceful:
            deadline = time.monotonic() + STOP_GRACE_S
            while time.monotonic() < deadline and any(
                    s.process is not None and s.process.is_alive() for s in self.supervisor.slots):
                time.sleep(0.1)
        self.supervisor.shutdown()
        log.info("actors stopped")
