"""Runs N actor processes: distinct seeds, restarts with a rate limit, clean shutdown, stats.

- Processes come from multiprocessing's 'spawn' context (no forked torch / GL / ZeroMQ state).
- Seeds: seed + 1000 * actor_id (+ env index inside the VecEnv), plus RESTART_SEED_STRIDE per
  restart of a slot, so a restarted actor does not replay the episodes it already sent.
- Slots are training actors, plus `evaluators` evaluator processes (actors/eval_loop.py: the
  deterministic evaluation episodes, outside the training data path).
- A child that exits with code 0 was told by the learner that the run is over (`stop`): its slot
  is done, and so is the run for every slot (they all talk to one learner): a slot waiting in
  back-off is not restarted, and a child still running `run_end_grace_s` later (one restarted
  just before the end never heard the learner's stop, which is sent once) is stopped. EXIT_REFUSED: the learner refused its settings (another task, action repeat, frame
  stack, ...): restarting cannot fix a flag, so the slot ends with an error. Any other exit is a
  crash (kill -9 included): the slot restarts after a back-off (actors/backoff.py, Kubernetes'
  CrashLoopBackOff: 1 s, 2 s, 4 s ... capped at 60 s, back to 1 s once a child ran 60 s), and
  is never given up after a burst; only a crash after `max_restarts` (> 0) restarts in a row
  (no stable run between) gives it up. Each crash is logged with its exit code, how long the child ran and
  the delay before the restart.
- Software rendering (Mesa llvmpipe) renders with several threads per process; N processes on
  C cores scale better with C // N threads each (measured: bench/results/scaling-cartpole-cpu*.md),
  so children get LP_NUM_THREADS = max(1, C // N) unless the user set it.
- Children set PR_SET_PDEATHSIG (SIGKILL): if the supervisor dies, even by SIGKILL, they die too.
  They ignore SIGINT (Ctrl-C reaches the whole process group; the supervisor coordinates), and
  SIGTERM makes them exit at once. On SIGINT/SIGTERM the supervisor terminates every child, joins
  with a timeout, then kills what is left.
"""
from __future__ import annotations

import ctypes
import dataclasses
import logging
import math
import multiprocessing as mp
import os
import signal
import sys
import time
from typing import Any

from actors.backoff import RestartBackoff
from fpac_async.config import EnvConfig
from fpac_async.wire.protocol import ACTOR, EVALUATOR
from fpac_async.settings import EXIT_REFUSED

log = logging.getLogger(__name__)

RESTART_SEED_STRIDE = 10_000_000
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM
_PR_SET_PDEATHSIG = 1
STAT_FIELDS = ("agent_steps", "episodes", "last_return", "env_sps", "version", "alive")


@dataclasses.dataclass(frozen=True)
class ActorSpec:
    """What one child process needs (picklable: it crosses the spawn boundary)."""

    actor_id: int
    slot: int
    env_cfg: EnvConfig
    endpoint: str
    seed: int
    steps_per_message: int
    log_level: int = logging.INFO
    render_threads: int = 0  # LP_NUM_THREADS for llvmpipe (0: leave Mesa's default)
    frame_stack: int = 2
    encoder: str = "fpac"
    role: str = ACTOR  # or EVALUATOR
    eval_episodes: int = 10  # evaluators: envs made = min(this, 10)
    no_reply_warn_s: float = math.inf  # actors.no_reply: only the first slot warns (issue 20)


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: the kernel sends SIGKILL to this process when its parent exits."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: shutdown still terminates children
        log.debug("prctl(PR_SET_PDEATHSIG) is unavailable here")


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(SIGTERM_EXIT_CODE)


def actor_process(spec: ActorSpec, stats: Any) -> None:
    """Entry point of one actor child (spawn target). Exit code 0 only when the learner stopped."""
    _die_with_parent()
    if spec.encoder == "state":  # nothing renders: no GL needed (a machine without EGL works)
        os.environ.setdefault("MUJOCO_GL", "disable")
    if spec.render_threads and "LP_NUM_THREADS" not in os.environ:
        os.environ["LP_NUM_THREADS"] = str(spec.render_threads)  # before any GL context exists
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    name = "actor" if spec.role == ACTOR else "evaluator"
    logging.basicConfig(level=spec.log_level,
                        format=f"%(asctime)s {name}{spec.actor_id} %(levelname)s %(message)s")
    if spec.role == EVALUATOR:
        from actors.eval_loop import EvalLoop  # noqa: PLC0415 (heavy imports in the child only)
        reason = EvalLoop(spec.actor_id, spec.env_cfg, spec.endpoint, spec.seed,
                          frame_stack=spec.frame_stack, encoder=spec.encoder,
                          episodes=spec.eval_episodes,
                          no_reply_warn_s=spec.no_reply_warn_s).run()
        sys.exit(_exit_code(reason))
    from actors.actor_loop import ActorLoop  # noqa: PLC0415 (heavy imports in the child only)

    row = spec.slot * len(STAT_FIELDS)

    def on_stats(s: dict) -> None:
        returns = [e["return"] for e in s["episodes"]]
        values = (s["agent_steps"], s["episodes_total"],
                  returns[-1] if returns else stats[row + 2], s["perf"]["env_sps"],
                  s["perf"]["version"], 1.0)
        for i, v in enumerate(values):
            stats[row + i] = float(v)

    loop = ActorLoop(spec.actor_id, spec.env_cfg, spec.endpoint, spec.seed,
                     steps_per_message=spec.steps_per_message, on_stats=on_stats,
                     frame_stack=spec.frame_stack, encoder=spec.encoder,
                     no_reply_warn_s=spec.no_reply_warn_s)
    sys.exit(_exit_code(loop.run()))


def _exit_code(reason: str) -> int:
    return {"stop": 0, "refused": EXIT_REFUSED}.get(reason, 1)


def render_threads_per_actor(n: int, cores: int | None = None) -> int:
    """llvmpipe threads per actor process: the cores shared out, at least one each."""
    return max(1, (cores or os.cpu_count() or 1) // n)


@dataclasses.dataclass
class _Slot:
    index: int
    actor_id: int
    role: str = ACTOR
    process: Any = None
    restarts: int = 0
    backoff: RestartBackoff = dataclasses.field(default_factory=RestartBackoff)
    restart_at: float = 0.0  # state "backoff": when the next start is due (time.monotonic)
    state: str = "running"  # running | backoff | done | failed | refused


class Supervisor:
    """Starts, watches and stops `n` actor processes; `run()` returns an exit code."""

    def __init__(self, n: int, env_cfg: EnvConfig, endpoint: str, seed: int = 0,
                 actor_id_offset: int = 0, steps_per_message: int = 16, max_restarts: int = 0,
                 restart_backoff_s: float = 1.0, restart_backoff_max_s: float = 60.0,
                 restart_reset_s: float = 60.0, stats_every_s: float = 30.0,
                 shutdown_timeout_s: float = 5.0, target: Any = actor_process,
                 frame_stack: int = 2, encoder: str = "fpac", evaluators: int = 0,
                 eval_episodes: int = 10, run_end_grace_s: float = 15.0,
                 no_reply_warn_s: float = 30.0) -> None:
        if n < 0 or evaluators < 0 or n + evaluators < 1:
            raise ValueError(f"need at least one actor or evaluator; got --n {n}, "
                             f"{evaluators} evaluators")
        self.env_cfg = env_cfg
        self.endpoint = endpoint
        self.seed = seed
        self.steps_per_message = steps_per_message
        backoff = dict(base_s=restart_backoff_s, max_s=restart_backoff_max_s,
                       reset_after_s=restart_reset_s, max_restarts=max_restarts)
        RestartBackoff(**backoff)  # bad settings fail here, not in a slot later
        self.stats_every_s = stats_every_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.target = target
        self.frame_stack = frame_stack
        self.encoder = encoder
        self.eval_episodes = eval_episodes
        self.no_reply_warn_s = no_reply_warn_s
        self._ctx = mp.get_context("spawn")
        self.stats = self._ctx.RawArray("d", (n + evaluators) * len(STAT_FIELDS))
        self.slots = [_Slot(i, actor_id_offset + i) for i in range(n)] + [
            _Slot(n + j, actor_id_offset + j, EVALUATOR) for j in range(evaluators)]
        for slot in self.slots:
            slot.backoff = RestartBackoff(**backoff)
        self.render_threads = render_threads_per_actor(n + evaluators)
        self._signalled = 0
        self.run_end_grace_s = run_end_grace_s
        self._run_ended_at: float | None = None  # when a child first exited 0 (learner's stop)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        for slot in self.slots:
            self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        seed = self.seed + 1000 * slot.actor_id + RESTART_SEED_STRIDE * slot.restarts
        spec = ActorSpec(slot.actor_id, slot.index, self.env_cfg, self.endpoint, seed,
                         self.steps_per_message, logging.getLogger().getEffectiveLevel(),
                         self.render_threads, self.frame_stack, self.encoder, slot.role,
                         self.eval_episodes,
                         self.no_reply_warn_s if slot.index == 0 else math.inf)
        slot.process = self._ctx.Process(target=self.target, args=(spec, self.stats),
                                         name=f"fpac-{slot.role}-{slot.actor_id}", daemon=False)
        slot.process.start()
        slot.state = "running"
        slot.backoff.started(time.monotonic())
        log.info("%s %d: started pid %d (seed %d)", slot.role, slot.actor_id, slot.process.pid,
                 seed)

    def poll(self) -> None:
        """Reap exited children: done on exit 0, restart after a back-off otherwise; start the
        slots whose back-off has run out."""
        now = time.monotonic()
        if self._run_ended_at is not None:
            self._finish_run(now)
        for slot in self.slots:
            if slot.state == "backoff" and now >= slot.restart_at:
                slot.restarts += 1
                log.warning("%s %d: restarting (restart %d)", slot.role, slot.actor_id,
                            slot.restarts)
                self._spawn(slot)
                continue
            p = slot.process
            if slot.state != "running" or p is None or p.is_alive():
                continue
            p.join()
            code = p.exitcode
            self.stats[slot.index * len(STAT_FIELDS) + 5] = 0.0
            if code == 0:
                slot.state = "done"
                log.info("%s %d: finished (the learner ended the run)", slot.role, slot.actor_id)
                if self._run_ended_at is None:
                    self._run_ended_at = now
                    self._finish_run(now)
                continue
            if code == EXIT_REFUSED:
                slot.state = "refused"
                log.error("%s %d: the learner refused its settings (see its log above): start "
                          "fpac-actors with the learner's flags; not restarting it", slot.role,
                          slot.actor_id)
                continue
            ran = slot.backoff.ran_for(now)
            delay = slot.backoff.crashed(now)
            if delay is None:
                slot.state = "failed"
                log.error("%s %d: exited with code %s after running %.1f s (crash %d in a "
                          "row, --max-restarts %d); giving up on this slot (see its log above "
                          "for the cause)", slot.role, slot.actor_id, code, ran,
                          slot.backoff.crashes_in_a_row, slot.backoff.max_restarts)
                continue
            slot.state, slot.restart_at = "backoff", now + delay
            b = slot.backoff
            log.warning("%s %d: exited with code %s after running %.1f s (crash %d in a row); "
                        "restarting in %g s (back-off %g s doubling to %g s, reset after "
                        "%g s of stable running)", slot.role, slot.actor_id, code, ran,
                        b.crashes_in_a_row, delay, b.base_s, b.max_s, b.reset_after_s)

    def _finish_run(self, now: float) -> None:
        """The learner ended the run: no more restarts, and children that did not hear its stop
        within the grace period are stopped (their slots are done: nothing is left to do)."""
        for slot in self.slots:
            if slot.state == "backoff":
                slot.state = "done"
                log.info("%s %d: not restarted: the learner ended the run", slot.role,
                         slot.actor_id)
            elif (slot.state == "running" and now - self._run_ended_at >= self.run_end_grace_s
                  and slot.process is not None and slot.process.is_alive()):
                log.warning("%s %d: still running %g s after the learner ended the run (started "
                            "after its stop?); stopping it", slot.role, slot.actor_id,
                            self.run_end_grace_s)
                self._stop_processes([slot.process])
                slot.state = "done"

    def shutdown(self) -> None:
        """SIGTERM every child, join with a timeout, SIGKILL the rest: no orphans."""
        self._stop_processes([s.process for s in self.slots if s.process is not None])

    def _stop_processes(self, procs: list[Any]) -> None:
        """SIGTERM these children, join them within shutdown_timeout_s, SIGKILL what is left."""
        for p in procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + self.shutdown_timeout_s
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                log.warning("actor process %d did not exit on SIGTERM; killing it", p.pid)
                p.kill()
                p.join()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signalled = signum

    def run(self, poll_s: float = 0.2) -> int:
        """Start the actors and supervise until every slot ends or a signal arrives.
        Exit code: 0 all slots stopped by the learner or by a signal, EXIT_REFUSED (3) some slot
        was refused by the learner, 1 some slot was given up."""
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            last_stats = time.monotonic()
            while not self._signalled and any(s.state in ("running", "backoff")
                                              for s in self.slots):
                time.sleep(poll_s)
                self.poll()
                if time.monotonic() - last_stats >= self.stats_every_s:
                    log.info("per-actor stats:\n%s", self.stats_table())
                    last_stats = time.monotonic()
            if self._signalled:
                log.info("signal %d: stopping %d actors", self._signalled, len(self.slots))
        finally:
            self.shutdown()
            for s, handler in old.items():
                signal.signal(s, handler)
            log.info("final per-actor stats:\n%s", self.stats_table())
        if any(s.state == "refused" for s in self.slots):
            return EXIT_REFUSED
        return 1 if any(s.state == "failed" for s in self.slots) else 0

    # ------------------------------------------------------------------ reporting
    def stats_table(self) -> str:
        width = len(STAT_FIELDS)
        lines = [f"{'role':>9} {'id':>4} {'state':>8} {'restarts':>8} {'steps':>10} {'episodes':>8} "
                 f"{'last_ret':>9} {'env_sps':>8} {'version':>7}"]
        for slot in self.slots:
            v = self.stats[slot.index * width:(slot.index + 1) * width]
            lines.append(f"{slot.role:>9} {slot.actor_id:>4} {slot.state:>8} {slot.restarts:>8} {v[0]:>10.0f} "
                         f"{v[1]:>8.0f} {v[2]:>9.1f} {v[3]:>8.1f} {v[4]:>7.0f}")
        return "\n".join(lines)
