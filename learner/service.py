"""The learner service: wires replay, trainer, receiver, broadcaster, evaluation, checkpoints, metrics.

Threads: the receiver thread owns the PULL socket and writes the replay; the main thread (this
class's `run`) owns the PUB socket, the SAC and everything on disk. See docs/INTERFACES.md,
"The service", for the message flow, counters and replay-ratio rule.

Shapes come from the config and a per-domain table (learner.task_shapes), so the SAC and the
policy exist before any actor connects and a hello is answered at once (unless --wait-for-actors
holds a new run's first policy: learner.waiting); hellos and steps that disagree are rejected.

Exit codes of `run()`: 0 the budget was reached and the final policy's evaluation is recorded
(`stop` published); 1 the same but no evaluation made progress for final_eval_timeout_s, or an
unexpected failure; 2 the run could not start (device, config, checkpoint, address in use):
nothing in the run directory was overwritten; 128 + signal number after SIGTERM/SIGINT
(checkpoint written, no `stop` published: actors keep waiting for a resumed learner).
"""
from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
import time
from typing import Any

import numpy as np
import torch
import zmq

from fpac_async.wire.auth import load_server_keys
from fpac_async.config import ConfigError, RunConfig, resolve, save_config
from fpac_async.agent.sac import SAC
from fpac_async.settings import run_settings
from fpac_async.agent.speed import apply_tf32, resolve_speed
from fpac_async.wire.transport import DATA_SOCKET_BUFFER, STATE_SOCKET_BUFFER, learner_sockets
from learner.auth_guard import AuthGuard
from learner.broadcaster import Broadcaster
from learner.checkpoint import CheckpointError
from learner.eval_control import serve_evaluators
from learner.evaluation import EvalRecord, EvalSchedule
from learner.lag_bound import NO_LIMIT, LagBound
from learner.metrics import MetricsLogger, RateMeter
from learner.pacing import Pacer
from learner.progress import Progress
from learner.receiver import Receiver
from learner.replay import Replay
from learner.run_end import FinalEvaluation, release_actors
from learner.run_state import open_checkpoint, restore, snapshot, write_checkpoint
from learner.runtime import choose_device, install_stop_signals, restore_signals
from learner.task_shapes import task_shapes
from learner.trainer import Trainer
from learner.waiting import StartBarrier, WaitingNotice

log = logging.getLogger(__name__)

MAX_CHUNK_UPDATES = 64  # updates per train() call: keeps hellos, broadcasts and metrics responsive
CHUNK_BUDGET_S = 0.25  # ... and so does a time budget per call (a CPU update can take ~1 s)
IDLE_SLEEP_S = 0.002


class LearnerService:
    """One learner run; `run()` blocks until the run ends and returns the exit code."""

    def __init__(self, cfg: RunConfig, resume: bool = False, *, eval_timeout_s: float = 600.0,
                 final_eval_timeout_s: float = 600.0, tensorboard: bool = True,
                 console: bool = True, auth_dir: str | None = None) -> None:
        """auth_dir: a `fpac-keys` directory: CURVE on all sockets, only listed actors accepted."""
        self.cfg = cfg
        self.auth_dir = auth_dir
        self.guard: AuthGuard | None = None
        self.resume, self.tensorboard, self.console = resume, tensorboard, console
        self.eval_timeout_s, self.final_eval_timeout_s = eval_timeout_s, final_eval_timeout_s
        self.signal: int | None = None
        self.ready = threading.Event()  # set once sockets are bound (tests wait on it)
        self._stop_requested = threading.Event()
        self._ctx: zmq.Context | None = None
        self._sockets: list[zmq.Socket] = []
        self.receiver: Receiver | None = None
        self.metrics: MetricsLogger | None = None

    # ------------------------------------------------------------------ public
    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """What SIGTERM/SIGINT do: checkpoint and exit (callable from any thread)."""
        self.signal = signum
        self._stop_requested.set()

    def run(self) -> int:
        try:
            self._setup()
        except (ConfigError, CheckpointError, ValueError, zmq.ZMQError) as e:
            log.error("the learner cannot start: %s", e)
            self._close()
            return 2
        old = install_stop_signals(self.request_stop)
        try:
            return self._loop()
        except Exception:  # noqa: BLE001 - logged with its traceback; the exit code says it failed
            log.exception("the learner failed")
            return 1
        finally:
            restore_signals(old)
            self._close()

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        cfg = self.cfg = resolve(self.cfg)
        self.device = choose_device(cfg.learner.gpus)
        ckpt = open_checkpoint(cfg, self.resume)
        # Bind before writing anything: an address in use must not touch the run directory.
        keys = None if self.auth_dir is None else load_server_keys(self.auth_dir)  # AuthError
        self._ctx = zmq.Context()
        self.guard = AuthGuard(self._ctx, keys)  # the ZAP handler runs before anything binds
        pull, pub, control = learner_sockets(
            self._ctx, cfg.learner.bind, cfg.learner.max_message_bytes,
            STATE_SOCKET_BUFFER if cfg.agent.encoder == "state" else DATA_SOCKET_BUFFER,
            secure=self.guard.secure)
        self._sockets = [pull, pub, control]
        self.guard.watch({"data": pull, "broadcast": pub, "control": control})
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)

        self.shapes = shapes = task_shapes(cfg)
        state_dim = shapes.state_dim if cfg.agent.encoder == "state" else 0
        pixels = cfg.agent.encoder != "state"  # the state encoder needs no frames: none stored
        stack = cfg.agent.frame_stack
        obs_shape = (3 * stack, *shapes.frame_shape[1:])
        try:
            self.speed = resolve_speed(cfg.learner, self.device)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if cfg.learner.tf32 != "auto":
            apply_tf32(self.speed.tf32)
        self.sac = SAC(cfg.agent, obs_shape, shapes.action_dim, self.device, state_dim=state_dim,
                       **self.speed.sac_kwargs())
        self.replay = Replay(cfg.replay.capacity, shapes.frame_shape, shapes.action_dim, stack,
                             state_dim, self.device, on_gpu=cfg.replay.on_gpu, seed=cfg.seed,
                             batch_size=cfg.agent.batch_size, pixels=pixels)
        self.trainer = Trainer(self.sac, self.replay, cfg.agent, cfg.replay,
                               cfg.agent.batch_size, self.device)
        counters = restore(ckpt, cfg, self.sac, self.trainer, self.replay)
        log.info("%s", self.replay.describe())
        log.info("device %s, task %s, frames %s, action dim %d, encoder %s, %s", self.device,
                 cfg.env.task, shapes.frame_shape, shapes.action_dim, cfg.agent.encoder,
                 self.speed.describe())

        self.version = int(counters["policy_version"])
        self.lag = LagBound(cfg.learner.max_policy_lag, self.version, self.trainer.updates)
        self.weights_every = self.lag.weights_every(cfg.learner.weights_every)  # meets the bound
        self.pacer = Pacer(cfg.learner.actor_lead)
        self.random_phase = int(counters["agent_steps"]) < cfg.replay.initial_random_steps
        self.barrier = StartBarrier(cfg.learner.wait_for_actors, resumed=ckpt is not None)
        # A new id per learner process: actors of an earlier learner on this port notice it in
        # the broadcasts and say hello again, and their steps are refused until they have.
        self.broadcaster = Broadcaster(pub, run=secrets.randbits(62),
                                       bf16=cfg.learner.weights_wire == "bf16")
        # Admission is the trainer's (it admits everything while a resume refills the replay).
        self.receiver = Receiver(pull, shapes, self.replay.add, self.trainer.admit,
                                 cfg.env.action_repeat, cfg.env_steps,
                                 cfg.learner.max_message_bytes, expect_state=state_dim > 0,
                                 expect_frames=pixels,
                                 agent_steps=int(counters["agent_steps"]),
                                 episodes=int(counters["episodes"]), policy_version=self.version,
                                 control=control, lag=self.lag,
                                 updates=lambda: self.trainer.updates,
                                 settings=run_settings(cfg.env, stack, cfg.agent.encoder))
        self.evaluator = EvalSchedule(cfg.learner.eval_every_env_steps, cfg.learner.eval_episodes,
                                      self.eval_timeout_s, start_env_steps=self.receiver.env_steps)
        # Policy version -> env steps when it was broadcast: evaluations are recorded at the env
        # steps of the version they evaluated (the learning curve's x axis).
        self.version_env_steps = {self.version: self.receiver.env_steps}
        # Last: a start-up that fails (an incompatible checkpoint or replay) leaves config.json as
        # it was, so the run can still be resumed with its own config.
        save_config(cfg, os.path.join(cfg.run_dir, "config.json"))
        self.metrics = MetricsLogger(cfg.run_dir, tensorboard=self.tensorboard, console=self.console,
                                     line=Progress.of(cfg).line)  # fpac-train's line (issue 20)

    # ------------------------------------------------------------------ main loop
    def _loop(self) -> int:
        cfg, r, trainer = self.cfg, self.receiver, self.trainer
        assert r is not None
        r.start()
        if self.barrier.passed:  # else the Nth accepted hello opens it (below)
            self.broadcaster.publish_policy(self.sac, self.version, self.random_phase)
        self.ready.set()
        self.broadcast_at = self.ckpt_at = trainer.updates
        self.losses: dict[str, float] = {}
        self._s_per_update: float | None = None  # moving average of one update's wall time
        self.train_return: float | None = None
        window_s = max(10.0, 2 * cfg.learner.log_every_s)
        self.sps, self.ups = RateMeter(window_s), RateMeter(window_s)
        last_row, waiting = 0.0, WaitingNotice(cfg.learner.bind)
        final = FinalEvaluation(self.evaluator, self.final_eval_timeout_s)
        while not self._stop_requested.is_set():
            if r.error is not None:
                raise RuntimeError("the receiver thread failed") from r.error
            if waiting and not waiting.poll(bool(r.actors() or self.evaluator.alive())):
                waiting = None
            agent_steps = r.agent_steps
            if self.random_phase and agent_steps >= cfg.replay.initial_random_steps:
                self.random_phase = False  # actors switch to the policy right now
                self._broadcast()
            if r.hello_pending.is_set() and self.barrier.open(len(r.accepted)):
                r.hello_pending.clear()
                self.broadcaster.publish_policy(self.sac, self.version, self.random_phase)
            started, n = time.monotonic(), self._chunk()
            stats = trainer.train(agent_steps, agent_steps * cfg.env.action_repeat, n) if n else None
            if not self.random_phase and self.lag.republish_due(started):
                self.broadcaster.publish_weights(self.sac, self.version)
            if stats:
                self.losses = stats
                per_update = (time.monotonic() - started) / max(1, int(stats["updates_run"]))
                self._s_per_update = per_update if self._s_per_update is None else (
                    0.8 * self._s_per_update + 0.2 * per_update)
            if trainer.updates - self.broadcast_at >= self.weights_every:
                self._broadcast()
            elif self.pacer.due(time.monotonic()):  # actors may be waiting at their grants
                self.pacer.publish(r, trainer, self.broadcaster, self.version)
            if trainer.updates - self.ckpt_at >= cfg.learner.checkpoint_every:
                self._checkpoint()
            self._evaluate()
            if trainer.refilling:
                with r.snapshot_lock:  # replay contents and agent steps from the same instant
                    if r.budget_reached.is_set():
                        trainer.end_refill(r.agent_steps)  # no more steps will come to fill it
                    else:
                        trainer.poll_refill(r.agent_steps)
            if not final.requested and r.budget_reached.is_set() and (
                    trainer.owed(r.agent_steps) == 0 or self.replay.num_valid < 1):
                if trainer.updates != self.broadcast_at:
                    self._broadcast()  # the final evaluation runs the final weights
                final.request(r.env_steps, self.version)
                log.info("reached %d env steps (budget %d): final evaluation", r.env_steps,
                         cfg.env_steps)
            if final.over():
                break
            if time.monotonic() - last_row >= cfg.learner.log_every_s:
                self._log_row()
                last_row = time.monotonic()
            if not stats:
                time.sleep(IDLE_SLEEP_S)
        self._checkpoint()
        self._log_row()
        if self.signal is not None:
            log.info("stopped by signal %d after %d env steps; checkpoint written", self.signal,
                     r.env_steps)
            return 128 + self.signal
        release_actors(r, self.broadcaster, self.version)
        log.info("run finished: %d env steps, %d updates", r.env_steps, trainer.updates)
        return 0 if self.evaluator.final_done else 1

    def _chunk(self) -> int:
        """Updates for the next train() call: stop exactly at broadcast/checkpoint points and at
        the lag bound's credit (0: wait for fresher records; none owed after the budget)."""
        lc, u, r = self.cfg.learner, self.trainer.updates, self.receiver
        assert r is not None
        credit = NO_LIMIT if r.budget_reached.is_set() else self.lag.credit(u, time.monotonic())
        # One update until its cost is known, then as many as fit in CHUNK_BUDGET_S.
        budget = 1 if self._s_per_update is None else int(CHUNK_BUDGET_S / self._s_per_update)
        return min(credit, max(1, min(MAX_CHUNK_UPDATES, budget, self.weights_every - (
            u - self.broadcast_at), lc.checkpoint_every - (u - self.ckpt_at))))

    def _broadcast(self) -> None:
        self.version += 1
        assert self.receiver is not None
        self.receiver.policy_version = self.version
        self.lag.on_broadcast(self.version, self.trainer.updates)  # before any record can carry it
        self.version_env_steps[self.version] = self.receiver.env_steps
        while len(self.version_env_steps) > 100_000:  # bounded: oldest versions first
            self.version_env_steps.pop(next(iter(self.version_env_steps)))
        self.broadcaster.publish_weights(self.sac, self.version)
        self.broadcast_at = self.trainer.updates
        self.pacer.publish(self.receiver, self.trainer, self.broadcaster, self.version, fresh=True)

    def _evaluate(self) -> None:
        assert self.receiver is not None
        for record in serve_evaluators(self.receiver, self.evaluator, self.broadcaster,
                                       self.version, self.version_env_steps.get):
            self._record_eval(record)

    def _record_eval(self, record: EvalRecord) -> None:
        """One line per evaluation in evals.jsonl, and a metrics row marked with its env steps."""
        assert self.metrics is not None
        returns = np.asarray(record.returns)
        self.metrics.log_eval({
            "env_steps": record.env_steps, "version": record.version,
            "mean_return": record.mean_return, "std_return": float(returns.std()),
            "returns": list(record.returns), "lengths": list(record.lengths),
            "evaluator": record.evaluator, "final": record.final, "time": record.finished_at,
            "wall_s": record.wall_s, "requested_env_steps": record.requested_env_steps,
            "learner_env_steps": self.counters()["env_steps"]})
        self._log_row(eval_env_steps=record.env_steps, eval_version=record.version,
                      eval_std=float(returns.std()), eval_final=record.final)

    # ------------------------------------------------------------------ disk
    def counters(self) -> dict[str, int]:
        r = self.receiver
        assert r is not None
        agent_steps = r.agent_steps  # read once: env_steps derives from it
        return {"env_steps": agent_steps * self.cfg.env.action_repeat, "agent_steps": agent_steps,
                "updates": self.trainer.updates, "episodes": r.episodes,
                "policy_version": self.version, "ratio_offset": self.trainer.ratio_offset(agent_steps)}

    def _checkpoint(self) -> None:
        assert self.receiver is not None
        with self.receiver.snapshot_lock:  # counters and replay from the same instant
            state = snapshot(self.cfg, self.sac, self.replay, self.counters())
        path = write_checkpoint(self.cfg, self.sac, state)
        self.ckpt_at = self.trainer.updates
        log.info("checkpoint %s (+ policy.pt)", path)

    def _log_row(self, **extra: Any) -> None:
        r = self.receiver
        assert r is not None and self.metrics is not None
        c = self.counters()
        self.sps.update(c["env_steps"])
        self.ups.update(c["updates"])
        window = r.take_window()
        if window.train_returns:
            self.train_return = float(np.mean(window.train_returns))
        rejects = dict(r.rejects.counts)
        row: dict[str, Any] = {
            "time": time.time(), **c, "actors": len(r.actors()), "sps": self.sps.rate(),
            "ups": self.ups.rate(), "replay_size": len(self.replay), "policy_lag": window.policy_lag,
            **window.lag_updates.row(), "policy_lag_refused": self.lag.refused,
            "train_return": self.train_return, "eval_return": self.evaluator.last_mean,
            "rejected_messages": sum(rejects.values()),
            **{f"rejected_{k}": v for k, v in rejects.items()}, **r.ledger.as_row(),
            **(self.guard.counts() if self.guard is not None else {}),
            **{k: v for k, v in self.losses.items() if k != "updates_run"},
            **{f"actor_{k}": v for k, v in r.perf_means().items()}, **extra}
        self.metrics.log(row)

    # ------------------------------------------------------------------ shutdown
    def _close(self) -> None:
        if self.receiver is not None and self.receiver.is_alive():
            self.receiver.stop()
            self.receiver.join(timeout=5.0)
        if self.guard is not None:
            self.guard.close()  # its monitor sockets first: the context cannot end while open
        for sock in self._sockets:
            sock.close(linger=0)
        self._sockets = []
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
