"""The learner's receiver thread: PULL socket -> validated messages -> replay and counters.

One thread owns the PULL socket (zmq sockets are not thread-safe; the main thread owns the PUB
socket). Every message is decoded with the size cap; anything that fails validation, or is valid
but does not fit this run's task (frame shape, action dim, state dim, task name), is counted per
reason by a RejectCounter and dropped: the learner never crashes on input from the network.

Backpressure (docs/INTERFACES.md, "Counters"): while `admit()` is False the thread stops reading
the data socket, so the bounded zmq queues fill up and the actors block in send; it reads anyway
while the lag bound starves the learner (learner.lag_bound: records are checked against the bound
there, and a stale one is never taken). Once the env-step budget is reached it stops reading the
data socket (the actors are held, blocked in send, while the learner finishes its owed updates
and the final evaluation) until `draining` is set at the end of the run: then it reads and drops
`steps` (the counters stay frozen at the budget) so that held actors unblock and see `stop`.

The control socket (evaluators' hello, heartbeat, eval_result) is read ALWAYS and its messages
queued (`control`) for the main thread (learner/eval_control.py). A hello whose settings differ
from the run's (fpac_async.settings) is rejected ('config') and queued in `refusals`.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import zmq

from fpac_async.wire.protocol import (ACTOR, EVAL_RESULT, EVALUATOR, FIRST, HEARTBEAT, HELLO, STATS,
                                      STEPS, TERMINAL, TRUNCATED, Message, ProtocolError,
                                      ShapeError, decode)
from fpac_async.settings import mismatches
from fpac_async.wire.transport import CONTROL_MAX_BYTES, RejectCounter
from learner.lag_bound import LagBound, LagStats
from learner.stream_ledger import StreamLedger
from learner.refusals import SettingsMismatchError, TaskMismatchError, UnknownActorError
from learner.task_shapes import TaskShapes

log = logging.getLogger(__name__)

ACTOR_WINDOW_S = 10.0  # an actor counts as present if it sent anything in the last 10 s
IDLE_SLEEP_S = 0.002  # backpressure: how long to wait before re-checking admission


@dataclass
class Window:
    """What arrived since the last metrics row (taken and reset by the main thread)."""
    lag_sum: int = 0  # in versions
    lag_count: int = 0
    lag_updates: LagStats = field(default_factory=LagStats)  # in updates
    train_returns: list[float] = field(default_factory=list)

    @property
    def policy_lag(self) -> float | None:
        return self.lag_sum / self.lag_count if self.lag_count else None


class Receiver(threading.Thread):
    """Reads the PULL socket until `stop()`; see the module docstring.

    `admit(agent_steps) -> bool` is the replay-ratio admission rule (Trainer.admit).
    `replay_add(**kwargs)` is Replay.add (thread-safe: the replay holds its own lock briefly).
    `lag` checks every record's policy version against the lag bound; `updates()` is the
    learner's update count (lags are in updates).
    """

    def __init__(self, sock: zmq.Socket, shapes: TaskShapes, replay_add: Callable[..., None],
                 admit: Callable[[int], bool], action_repeat: int, env_step_budget: int,
                 max_bytes: int, expect_state: bool = False, agent_steps: int = 0,
                 episodes: int = 0, policy_version: int = 0,
                 control: zmq.Socket | None = None, settings: dict | None = None,
                 expect_frames: bool = True, lag: LagBound | None = None,
                 updates: Callable[[], int] = lambda: 0) -> None:
        super().__init__(name="fpac-receiver", daemon=True)
        self.sock = sock
        self.control_sock = control
        self.settings = settings  # what every hello must agree with (None: not checked)
        self.control: queue.Queue[Message] = queue.Queue(maxsize=1000)
        self.refusals: queue.Queue[tuple[int, str, str]] = queue.Queue(maxsize=1000)
        self.shapes = shapes
        self.replay_add = replay_add
        self.admit = admit
        self.action_repeat = int(action_repeat)
        self.env_step_budget = int(env_step_budget)
        self.max_bytes = int(max_bytes)
        self.expect_state = expect_state
        # False when the encoder needs no pixels: steps then carry state and no frames (obs)
        self.expect_frames = bool(expect_frames)
        self.rejects = RejectCounter()
        self.ledger = StreamLedger()  # per-stream positions: repeats, gaps and restarts counted
        self.policy_version = int(policy_version)  # written by the main thread (an atomic int)
        self.lag = LagBound(version=self.policy_version) if lag is None else lag
        self.updates = updates
        self.agent_steps = int(agent_steps)
        self.episodes = int(episodes)
        self.hello_pending = threading.Event()  # main thread re-publishes the policy
        self.budget_reached = threading.Event()
        self.draining = threading.Event()  # the run is over: read and drop (held actors unblock)
        self.actor_perf: dict[int, dict[str, float]] = {}
        self.error: BaseException | None = None
        self._seen: dict[int, float] = {}
        self._paused_at: float | None = None  # when backpressure paused the data socket
        self.accepted: set[int] = set()  # actors whose hello passed (the start barrier counts)
        self._refused: dict[int, tuple[str, float]] = {}  # actor -> (reason, last refusal sent)
        self._asked_hello = 0.0
        self._window = Window()
        self._lock = threading.Lock()  # guards _window, _seen, actor_perf, counters' readers
        self.snapshot_lock = threading.Lock()  # replay adds + agent_steps/episodes, as one
        self._halt = threading.Event()
        if self.env_steps >= self.env_step_budget:
            self.budget_reached.set()

    # ------------------------------------------------------------------ main-thread API
    @property
    def env_steps(self) -> int:
        return self.agent_steps * self.action_repeat

    def stop(self) -> None:
        self._halt.set()

    def actors(self, window_s: float = ACTOR_WINDOW_S) -> set[int]:
        """Actor ids heard from in the last `window_s` seconds of reading: while backpressure
        pauses the data socket, actors blocked in send still count (issue 20: they read 0)."""
        now = self._paused_at or time.monotonic()
        with self._lock:
            return {a for a, t in self._seen.items() if now - t <= window_s}

    def take_window(self) -> Window:
        with self._lock:
            window, self._window = self._window, Window()
            return window

    def perf_means(self) -> dict[str, float]:
        """Mean of each perf figure over the actors seen recently."""
        present = self.actors()
        with self._lock:
            rows = [p for a, p in self.actor_perf.items() if a in present]
        keys = sorted({k for p in rows for k in p})
        return {k: float(np.mean([p[k] for p in rows if k in p])) for k in keys}

    # ------------------------------------------------------------------ thread body
    def run(self) -> None:
        poller = zmq.Poller()
        if self.control_sock is not None:
            poller.register(self.control_sock, zmq.POLLIN)
        try:
            while not self._halt.is_set():
                # The data socket only while admitted: leaving its messages queued makes the
                # actors block (backpressure). The control socket always.
                if self.budget_reached.is_set():  # held until the end of the run
                    admitted = self.draining.is_set()
                else:
                    admitted = self.lag.starved or self.admit(self.agent_steps)
                self._paused_at = None if admitted else (self._paused_at or time.monotonic())
                if admitted:
                    poller.register(self.sock, zmq.POLLIN)
                elif self.sock in poller:
                    poller.unregister(self.sock)
                if not poller.sockets:
                    time.sleep(IDLE_SLEEP_S)
                    continue
                ready = dict(poller.poll(50 if admitted else IDLE_SLEEP_S * 1000))
                if self.control_sock is not None and self.control_sock in ready:
                    self.handle_control(self.control_sock.recv_multipart(copy=False))
                if self.sock in ready:
                    self.handle(self.sock.recv_multipart(copy=False))
        except zmq.ContextTerminated:
            pass
        except Exception as e:  # noqa: BLE001 - reported to the main thread, which stops the run
            log.exception("receiver thread failed")
            self.error = e

    def handle(self, frames: list[Any]) -> None:
        """Decode and apply one data-socket message; a rejected message is counted and dropped."""
        try:
            msg = decode(frames, self.max_bytes)
            if msg.kind == STEPS:
                self._on_steps(msg)
            elif msg.kind == HELLO:
                self._on_hello(msg, ACTOR)
            elif msg.kind == STATS:
                self._on_stats(msg)
            else:  # evaluator kinds belong on the control socket; learner kinds nowhere here
                raise TaskMismatchError(f"kind {msg.kind!r} is not accepted on the data socket")
        except ProtocolError as e:
            self.rejects.add(e, "the data socket")
            return
        with self._lock:
            self._seen[msg.actor] = time.monotonic()

    def handle_control(self, frames: list[Any]) -> None:
        """Decode one control-socket message (evaluators) and queue it for the main thread."""
        try:
            msg = decode(frames, CONTROL_MAX_BYTES)
            if msg.kind == HELLO:
                self._on_hello(msg, EVALUATOR)
            elif msg.kind == HEARTBEAT:  # only evaluators with the run's settings count as alive
                self._refusing(msg, EVALUATOR, lambda: self._check_settings(msg, EVALUATOR))
            elif msg.kind != EVAL_RESULT:
                raise TaskMismatchError(f"kind {msg.kind!r} is not accepted on the control socket")
        except ProtocolError as e:
            self.rejects.add(e, "the control socket")
            return
        try:
            self.control.put_nowait(msg)
        except queue.Full:
            log.warning("dropping a %s from evaluator %d: 1000 control messages are waiting",
                        msg.kind, msg.actor)

    def _check_settings(self, msg: Message, role: str) -> None:
        """Reject a sender whose run settings differ from this run's, naming each flag."""
        if self.settings is None:
            return
        diff = mismatches(self.settings, msg.meta.get("settings"))
        if diff:
            raise SettingsMismatchError(f"{role} {msg.actor} was started with other settings "
                                        f"than the learner's: {'; '.join(diff)}")

    def _queue_refusal(self, actor: int, role: str, reason: str) -> None:
        """Hand a refusal to the main thread, which broadcasts it; dropped when the queue is
        full (a refused sender says hello, or sends steps, again: it is refused then)."""
        try:
            self.refusals.put_nowait((actor, role, reason))
        except queue.Full:
            pass

    def _refusing(self, msg: Message, role: str, check: Callable[[], None]) -> None:
        """Run `check`; if it rejects the message, also queue a `refuse` for its sender (the main
        thread publishes it: the sender exits instead of saying hello forever)."""
        try:
            check()
        except ProtocolError as e:
            if role == ACTOR:
                self.accepted.discard(msg.actor)
                self._refused[msg.actor] = (str(e), time.monotonic())
            self._queue_refusal(msg.actor, role, str(e))
            raise

    def _on_hello(self, msg: Message, role: str) -> None:
        self._refusing(msg, role, lambda: self._check_hello(msg, role))
        if role == ACTOR:
            self.accepted.add(msg.actor)
            self._refused.pop(msg.actor, None)
            replaced = self.ledger.on_hello(msg.actor, msg.meta.get("pid"))
            if replaced is not None:
                self.lag.forget(msg.actor)
                log.info("actor %d is a new process (pid %s, was %d): its streams start over",
                         msg.actor, msg.meta.get("pid"), replaced)
        self.hello_pending.set()

    def _check_hello(self, msg: Message, role: str) -> None:
        meta, s = msg.meta, self.shapes
        if meta.get("role", ACTOR) != role:
            raise TaskMismatchError(f"hello from {meta.get('role')} {msg.actor} on the "
                                    f"{role}s' socket")
        if meta["task"] != s.task:
            raise TaskMismatchError(f"hello from {role} {msg.actor}: task {meta['task']!r}, "
                                    f"this learner trains {s.task!r}")
        shape = tuple(meta["obs_shape"])
        # Actors may state the frame shape (3, H, W) or the stacked one (3S, H, W).
        if len(shape) != 3 or shape[1:] != s.frame_shape[1:] or shape[0] % 3:
            raise ShapeError(f"hello from {role} {msg.actor}: obs_shape {list(shape)}, "
                             f"expected {list(s.frame_shape)}")
        if meta["action_dim"] != s.action_dim:
            raise ShapeError(f"hello from {role} {msg.actor}: action_dim {meta['action_dim']}, "
                             f"expected {s.action_dim}")
        if "state_dim" in meta and meta["state_dim"] not in (0, s.state_dim):
            raise ShapeError(f"hello from {role} {msg.actor}: state_dim {meta['state_dim']}, "
                             f"expected {s.state_dim}")
        self._check_settings(msg, role)

    def _on_steps(self, msg: Message) -> None:
        a, s = msg.arrays, self.shapes
        obs = a.get("obs")
        if self.expect_frames and obs is None:
            raise ShapeError(f"steps from actor {msg.actor}: no frames, but this run's encoder "
                             f"needs pixels")
        if not self.expect_frames and obs is not None:
            raise ShapeError(f"steps from actor {msg.actor}: frames, but this run's encoder needs "
                             f"none (its actors must not render)")
        if obs is not None and obs.shape[1:] != s.frame_shape:
            raise ShapeError(f"steps from actor {msg.actor}: frames {list(obs.shape[1:])}, "
                             f"expected {list(s.frame_shape)}")
        if a["action"].shape[1] != s.action_dim:
            raise ShapeError(f"steps from actor {msg.actor}: action dim {a['action'].shape[1]}, "
                             f"expected {s.action_dim}")
        state = a.get("state")
        if state is not None and state.shape[1] != s.state_dim:
            raise ShapeError(f"steps from actor {msg.actor}: state dim {state.shape[1]}, "
                             f"expected {s.state_dim}")
        if self.expect_state and state is None:
            raise ShapeError(f"steps from actor {msg.actor}: the 'state' encoder needs state")
        refused = self._refused.get(msg.actor)
        if refused is not None and msg.actor not in self.accepted:
            reason, sent = refused
            if time.monotonic() - sent >= 1.0:  # PUB is lossy: refuse again, once a second
                self._refused[msg.actor] = (reason, time.monotonic())
                self._queue_refusal(msg.actor, ACTOR, reason)
            raise SettingsMismatchError(f"steps from refused actor {msg.actor}: {reason}")
        if msg.actor not in self.accepted:
            now = time.monotonic()
            if now - self._asked_hello >= 1.0:  # the re-published policy carries our run id
                self._asked_hello = now
                self.hello_pending.set()
            raise UnknownActorError(f"steps from actor {msg.actor}, whose hello this learner has "
                                    f"not accepted: refused until it says hello")
        if self.budget_reached.is_set():
            return  # the run is over: counters stay frozen at the budget
        step0, length = int(msg.meta["step0"]), len(a["flags"])
        # Records older than the lag bound are refused (a prefix of the chunk): never trained on.
        k, lags = self.lag.admit(msg.actor, a["version"], self.updates(), time.monotonic())
        flags, version = a["flags"][k:], a["version"][k:]
        acted = (flags & FIRST) == 0  # agent steps: records that a chosen action led to
        n = int(np.count_nonzero(acted))
        ended = int(np.count_nonzero(flags & (TERMINAL | TRUNCATED)))
        lag = self.policy_version * n - int(version[acted].astype(np.int64).sum())
        # The replay and the counters change together under `snapshot_lock`, so a checkpoint
        # (which holds it) never saves a replay holding steps its counters have not counted.
        with self.snapshot_lock:
            try:
                if k < length:
                    self.replay_add(stream=(msg.actor, msg.env), step0=step0 + k,
                                    obs=None if obs is None else obs[k:],
                                    action=a["action"][k:], reward=a["reward"][k:], flags=flags,
                                    version=version, cam=None if "cam" not in a else a["cam"][k:],
                                    state=state[k:] if self.expect_state else None)
            except ValueError as e:  # the replay's own checks (e.g. a chunk over its capacity)
                raise ShapeError(f"steps from actor {msg.actor}: replay refused the chunk: "
                                 f"{e}") from None
            self.ledger.take(msg.actor, msg.env, step0, length)  # the stream moved on, all of it
            self.episodes += ended
            self.agent_steps += n
        with self._lock:
            self._window.lag_sum += lag
            self._window.lag_count += n
            self._window.lag_updates.add(lags[acted])
        if self.env_steps >= self.env_step_budget:
            self.budget_reached.set()

    def _on_stats(self, msg: Message) -> None:
        episodes = msg.meta.get("episodes") or []
        perf = msg.meta.get("perf")
        with self._lock:
            self._window.train_returns.extend(e["return"] for e in episodes)
            if perf is not None:
                self.actor_perf[msg.actor] = dict(perf)

