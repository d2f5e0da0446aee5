"""The evaluator process: deterministic evaluation episodes outside the training actors' data path.

    fpac-actors --n 0 --evaluator --task cartpole_swingup --learner HOST:5555   (or fpac-train)

It subscribes to the learner's broadcasts (policy, weights, eval, stop, refuse) like an actor, and
talks to the learner over the CONTROL socket (PORT+2), which the learner reads even while it
throttles the data socket: hello (with the run settings, until a policy arrives), a heartbeat
every second, and eval_result. Training actors never pause for an evaluation.

An `eval` request addressed to this evaluator runs `episodes` deterministic episodes of ONE policy
version (weights arriving meanwhile are applied after), on its own envs (up to max_parallel at
once, actors/evaluator.py), with heartbeats between env steps that say which request it is
working on and how many episodes are done. The result carries the evaluated version (header) and
the episodes' wall time. A request for a newer version than the one held first waits (saying
hello, so the learner re-publishes its policy) up to VERSION_WAIT_S for those weights.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable

import torch
import zmq

from actors.envs import make_vec_env
from actors.evaluator import EVAL_SEED_OFFSET, Evaluator
from actors.no_reply import FIRST_WARNING_S, NoReplyWarner
from actors.policy import ActorPolicy
from fpac_async.wire import protocol as P
from fpac_async.wire.auth import client_keys_from_env, secure_client
from fpac_async.config import EnvConfig
from fpac_async.settings import run_settings
from fpac_async.wire.transport import (CONTROL_RCVHWM as CONTROL_SNDHWM, RejectCounter,
                                       actor_endpoints, push_socket, receive_all, send_message,
                                       sub_socket)

log = logging.getLogger(__name__)

VERSION_WAIT_S = 30.0  # how long a request for a newer policy waits for its weights
MAX_DONE_KEPT = 8  # results kept to answer a re-published request without running it again


class EvalLoop:
    """Runs one evaluator; `run()` returns why it ended: 'stop', 'refused' or 'interrupted'."""

    def __init__(self, evaluator_id: int, env_cfg: EnvConfig, endpoint: str, seed: int,
                 frame_stack: int = 2, encoder: str = "fpac", max_parallel: int = 10,
                 episodes: int = 10, heartbeat_every_s: float = 1.0,
                 make_env: Callable[..., object] = make_vec_env,
                 no_reply_warn_s: float = FIRST_WARNING_S) -> None:
        self.evaluator_id = evaluator_id
        self.no_reply_warn_s = no_reply_warn_s  # actors.no_reply (issue 20)
        self.env_cfg = env_cfg
        self.endpoints = actor_endpoints(endpoint)  # ValueError for a malformed HOST:PORT
        self.seed = seed
        self.frame_stack = frame_stack
        self.render = encoder != "state"
        self.settings = run_settings(env_cfg, frame_stack, encoder)
        self.heartbeat_every_s = heartbeat_every_s
        self.episodes = episodes  # the evaluation size expected: envs made = min(it, max_parallel)
        self.rejects = RejectCounter()
        self.evaluator = Evaluator(
            lambda n: make_env(env_cfg, seed + EVAL_SEED_OFFSET, n, render=self.render),
            seed=seed + EVAL_SEED_OFFSET, max_parallel=max_parallel)
        self.completed = 0
        self._reason: str | None = None
        self._request: P.Message | None = None  # the newest eval request for this evaluator
        self._deferred: list[P.Message] = []  # policy/weights that arrived during an evaluation
        self._busy: int | None = None
        self._done: dict[int, P.Message] = {}  # eval_id -> result sent
        self._seq = 0
        self._last_beat = 0.0
        self._unsent: P.Message | None = None  # a result the full queue did not take yet

    # ------------------------------------------------------------------ the run
    def run(self, should_stop: Callable[[], bool] = lambda: False) -> str:
        torch.set_num_threads(1)
        ctx = zmq.Context()
        secure = secure_client(client_keys_from_env())  # CURVE keys from fpac-actors --auth
        self.sub = sub_socket(ctx, self.endpoints.pub, secure=secure)  # SUB first: none missed
        self.push = push_socket(ctx, self.endpoints.control, sndhwm=CONTROL_SNDHWM, linger_ms=0,
                                sndbuf=-1, secure=secure)
        try:
            env = self.evaluator.open(self.episodes)
            self.obs_shape, self.action_dim = env.obs_shape, env.action_dim
            self.policy = ActorPolicy(1, env.action_dim, self.seed, self.frame_stack)
            warner = NoReplyWarner(f"evaluator {self.evaluator_id}", self.endpoints.control,
                                   self.no_reply_warn_s)
            while self._reason is None and not should_stop():
                self._tick(timeout_ms=100)
                if not self.policy.ready:
                    warner.poll()
                    if self._due(self.heartbeat_every_s, "_last_hello"):
                        self._hello()
                    continue
                if self._request is not None:
                    request, self._request = self._request, None
                    self._evaluate(request, should_stop)
            return self._reason or "interrupted"
        finally:
            self.evaluator.close()
            self.sub.close(linger=0)
            self.push.close(linger=0)
            ctx.term()

    def _due(self, every: float, attr: str) -> bool:
        now = time.monotonic()
        if now - getattr(self, attr, 0.0) >= every:
            setattr(self, attr, now)
            return True
        return False

    def _tick(self, timeout_ms: int = 0, episodes_done: int = 0) -> None:
        """Heartbeat if due, then handle every broadcast waiting (or arriving within timeout)."""
        if self._unsent is not None:
            unsent, self._unsent = self._unsent, None
            self._send(unsent, keep=True)
        if self._due(self.heartbeat_every_s, "_last_beat"):
            self._send(P.heartbeat_message(self.evaluator_id, self._next_seq(),
                                           self.policy.version, self._busy is not None,
                                           self._busy, episodes_done, self.settings))
        receive_all(self.sub, timeout_ms, self._handle, self.rejects, "learner broadcast",
                    until=lambda: self._reason is not None)

    def _handle(self, msg: P.Message) -> None:
        if msg.kind in (P.POLICY, P.WEIGHTS):
            if self._busy is not None:
                self._deferred = [msg]  # the newest only; applied when the episodes are done
            else:
                self._apply(msg)
        elif msg.kind == P.EVAL and msg.meta["target_actor"] == self.evaluator_id:
            done = self._done.get(msg.meta["eval_id"])
            if done is not None:
                self._send(done)  # a re-published request: the answer again, not the episodes
            elif msg.meta["eval_id"] != self._busy:
                self._request = msg
        elif msg.kind == P.STOP:
            log.info("evaluator %d: the learner ended the run", self.evaluator_id)
            self._reason = "stop"
        elif msg.kind == P.REFUSE and msg.meta["role"] == P.EVALUATOR \
                and msg.meta["target_actor"] == self.evaluator_id:
            log.error("evaluator %d: refused by the learner: %s", self.evaluator_id,
                      msg.meta["reason"])
            self._reason = "refused"

    def _apply(self, msg: P.Message) -> None:
        try:
            if msg.kind == P.POLICY:
                if (not self.policy.ready or msg.version != self.policy.version
                        or msg.meta["random"] != self.policy.random):
                    self.policy.load_policy(msg.arrays["script"], msg.arrays["weights"],
                                            msg.meta["layout"], msg.version, msg.meta["random"])
            elif self.policy.ready and msg.version != self.policy.version:
                self.policy.apply_weights(msg.version, P.weights_of(msg), msg.meta["layout"],
                                          random=False)
        except ValueError as e:  # another module (a learner restarted with a new config)
            log.warning("evaluator %d: %s does not fit the held policy (%s); asking for the "
                        "policy", self.evaluator_id, msg.kind, e)
            self._hello()
        except RuntimeError as e:  # garbage TorchScript bytes: keep the current policy
            log.warning("evaluator %d: cannot load the broadcast policy (%s)", self.evaluator_id, e)

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, request: P.Message, should_stop: Callable[[], bool]) -> None:
        eval_id, episodes = request.meta["eval_id"], request.meta["episodes"]
        self._busy = eval_id
        try:
            self._wait_for_version(request.version, should_stop)
            if self._reason is not None or should_stop():
                return
            version, start = self.policy.version, time.monotonic()
            returns, lengths = self.evaluator.run(
                self.policy, episodes, on_step=lambda done: self._tick(episodes_done=done),
                should_stop=lambda: self._reason is not None or should_stop())
            if len(returns) < episodes:
                return  # stopped half-way: nothing to report
            wall = time.monotonic() - start
            result = P.eval_result_message(self.evaluator_id, self._next_seq(), eval_id, returns,
                                           lengths, version, wall_s=wall)
            self._done[eval_id] = result
            while len(self._done) > MAX_DONE_KEPT:
                self._done.pop(next(iter(self._done)))
            self._send(result, keep=True)
            self.completed += 1
            log.info("evaluator %d: eval %d of version %d: mean return %.1f over %d episodes "
                     "(%.1f s)", self.evaluator_id, eval_id, version, sum(returns) / len(returns),
                     len(returns), wall)
        finally:
            self._busy = None
            for msg in self._deferred:
                self._apply(msg)
            self._deferred = []

    def _wait_for_version(self, version: int, should_stop: Callable[[], bool]) -> None:
        """Weights of at least `version` (the request's), or give up after VERSION_WAIT_S and
        evaluate the held version (the result says which version it was)."""
        deadline = time.monotonic() + VERSION_WAIT_S
        while self.policy.version < version and time.monotonic() < deadline:
            if self._reason is not None or should_stop():
                return
            for msg in self._deferred:
                self._apply(msg)
            self._deferred = []
            if self._due(1.0, "_last_hello"):
                self._hello()  # the learner re-publishes its current policy on hello
            self._tick(timeout_ms=100)
            for msg in self._deferred:  # _tick defers while busy: apply here, we wait for them
                self._apply(msg)
            self._deferred = []
        if self.policy.version < version:
            log.warning("evaluator %d: weights of version %d did not arrive in %.0f s; "
                        "evaluating version %d", self.evaluator_id, version, VERSION_WAIT_S,
                        self.policy.version)

    # ------------------------------------------------------------------ messages
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq - 1

    def _hello(self) -> None:
        self._send(P.hello_message(self.evaluator_id, self.env_cfg.task, os.getpid(),
                                   self.obs_shape, self.action_dim, seq=self._next_seq(),
                                   role=P.EVALUATOR, settings=self.settings))

    def _send(self, msg: P.Message, keep: bool = False) -> None:
        """Never blocks: with no learner (or a full queue) a hello or heartbeat is dropped (they
        repeat); a result (keep) is retried on every tick until the queue takes it, and sent
        again whenever its request is re-published."""
        try:
            send_message(self.push, msg, zmq.NOBLOCK)
        except zmq.Again:
            if keep:
                self._unsent = msg
