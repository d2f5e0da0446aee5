"""One actor process: step envs with the learner's policy and stream every record to the learner.

Protocol (docs/INTERFACES.md, "The service"): connect SUB (PORT+1) then PUSH (PORT); send `hello`
(with the run settings, fpac_async.settings) every second until a `policy` arrives (the learner
answers each hello by re-publishing its current policy, `random=True` during its initial random
phase) or a `refuse` naming what differs from the learner's settings (`run()` returns 'refused');
then loop
    act -> env.step -> records to the StreamSender (blocking sends = backpressure)
    -> drain the SUB socket without blocking (weights, grant, stop, refuse; not eval)
    -> at the learner's grant (learner/pacing.py): flush, wait for the next -> `stats` every ~2 s.
Weights never block acting: they are applied between steps when they have arrived. ZeroMQ
reconnects by itself when the learner restarts; after a long silence on SUB the actor re-sends
hello so a restarted learner re-publishes its policy.

Overlap (by default for >= 2 dmc envs): the envs are split into two lanes (two VecEnvs,
each with its own ActorPolicy view of the same module) and a worker thread runs one lane's policy
while the main thread renders the other lane. MuJoCo rendering and torch ops release the GIL, so
the policy's cost hides behind rendering (bench/bench_actor.py measures it). Env ids and seeds are
those of one VecEnv of all the envs (env i: seed + i), every step still sends one record per env,
and stats' policy_s is then the policy time the main thread waits for (not hidden by rendering).
"""
from __future__ import annotations

import functools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch
import zmq

from actors.envs import make_vec_env
from actors.envs.base import FIRST, VecEnv
from actors.grant_gate import GrantGate
from actors.inbox import Inbox
from actors.no_reply import FIRST_WARNING_S, NoReplyWarner
from actors.policy import ActorPolicy
from actors.sender import StreamSender
from actors.stepping import Meter, OverlappedStepper, SequentialStepper
from fpac_async.wire import protocol as P
from fpac_async.wire.auth import client_keys_from_env, secure_client
from fpac_async.config import EnvConfig
from fpac_async.settings import run_settings
from fpac_async.wire.transport import (DATA_SOCKET_BUFFER, STATE_SOCKET_BUFFER, RejectCounter,
                                       actor_endpoints, push_socket, send_message, sub_socket)

log = logging.getLogger(__name__)

MAX_EPISODES_PER_STATS = 1000  # the protocol's cap on meta.episodes
LANE_B_SEED_OFFSET = 250  # lane B's random-phase action generator: seed + 250 (lane A: seed)
OWED_HELLO_WAIT_MS = 1000  # how long an owed hello waits for room in the data queue, per step
WAIT_SILENCE_S = 5.0  # at a grant, nothing heard this long (grants come each second): hello


class ActorLoop:
    """Runs one actor; `run()` returns why it ended: 'stop' (the learner said so), 'steps'
    (max_agent_steps reached) or 'interrupted' (should_stop() said so)."""

    def __init__(self, actor_id: int, env_cfg: EnvConfig, endpoint: str, seed: int,
                 steps_per_message: int = 16, stats_every_s: float = 2.0,
                 hello_every_s: float = 1.0, silence_hello_s: float = 30.0,
                 frame_stack: int = 2, encoder: str = "fpac", probe_renderer: bool = True,
                 on_stats: Callable[[dict], None] | None = None,
                 make_env: Callable[[EnvConfig, int, int], VecEnv] = make_vec_env,
                 overlap: bool | None = None, render: bool | None = None,
                 no_reply_warn_s: float = FIRST_WARNING_S) -> None:
        """overlap: run one lane's policy in a worker thread while the other lane renders;
        None means on where it pays (bench/bench_actor.py): >= 2 envs on the dmc backend, which
        renders its envs one after the other. Off for envpool, whose one VecEnv renders its
        envs in parallel already (two lanes lose that), and for numpy, whose renders take
        microseconds: nothing to hide the policy behind, and two half-size calls cost more.
        render: None means what the encoder needs ('state' needs no pixels). False: the envs
        are made with render=False (make_env must accept it), steps carry state and no frames,
        and there are no lanes (nothing to hide the policy behind). no_reply_warn_s: say after
        this long without a policy that the learner does not answer (actors.no_reply; inf:
        never)."""
        if render is None:
            render = encoder != "state"
        if overlap and env_cfg.envs_per_actor < 2:
            raise ValueError("overlap needs envs_per_actor >= 2 (one lane renders while the "
                             f"other acts); got {env_cfg.envs_per_actor}")
        if overlap is None:
            overlap = env_cfg.envs_per_actor >= 2 and env_cfg.backend == "dmc" and render
        if not render:
            make_env = functools.partial(make_env, render=False)
        self.render, self.overlap = render, overlap
        self.actor_id, self.env_cfg = actor_id, env_cfg
        self.endpoints = actor_endpoints(endpoint)  # ValueError for a malformed HOST:PORT
        self.seed = seed
        self.steps_per_message, self.stats_every_s = steps_per_message, stats_every_s
        self.hello_every_s, self.silence_hello_s = hello_every_s, silence_hello_s
        self.no_reply_warn_s = no_reply_warn_s
        self.frame_stack = frame_stack
        # Sent in every hello: the learner refuses an actor started with other settings.
        self.settings = run_settings(env_cfg, frame_stack, encoder)
        self.probe_renderer = probe_renderer
        self.on_stats = on_stats
        self._make_env = make_env
        self.rejects = RejectCounter()
        self.renderer = ""
        self._stop = False
        self._stop_reason = "stop"  # or 'refused' (the learner refused this actor's settings)
        self._run: int | None = None  # the learner process's id, from its broadcasts
        # A hello is owed (a new learner process, or weights that do not fit): sent at the next
        # step, and retried until the queue takes it; broadcasts arriving meanwhile do not
        # cancel it (they only reset the silence timer).
        self._hello_owed = False
        self._out_seq = 0  # seq of hello / stats / eval_result messages
        self.gate = GrantGate(actor_id)  # the learner's pacing (actors/grant_gate.py)

    # ------------------------------------------------------------------ the run
    def run(self, max_agent_steps: int | None = None,
            should_stop: Callable[[], bool] = lambda: False) -> str:
        self._log_renderer()
        ctx = zmq.Context()
        secure = secure_client(client_keys_from_env())  # CURVE keys from fpac-actors --auth
        # SUB first: a policy published in answer to our first hello must find us subscribed.
        self.sub = sub_socket(ctx, self.endpoints.pub, secure=secure)
        self.push = push_socket(ctx, self.endpoints.data, sndbuf=DATA_SOCKET_BUFFER if self.render
                                else STATE_SOCKET_BUFFER,  # records in flight = policy lag
                                secure=secure)
        self.inbox = Inbox(self.sub, self.push, self.rejects)  # SUB read while a send blocks
        envs: list[VecEnv] = []
        try:
            n = self.env_cfg.envs_per_actor
            # Lanes: envs 0..a-1 and a..n-1 of what one VecEnv of n envs would be (env i: seed+i).
            sizes = [(n + 1) // 2, n // 2] if self.overlap else [n]
            for k, size in enumerate(sizes):
                envs.append(self._make_env(self.env_cfg, self.seed + sum(sizes[:k]), size))
            env = envs[0]
            torch.set_num_threads(1)  # one core per actor process: processes scale, threads do not
            self.policy = ActorPolicy(env.num_envs, env.action_dim, self.seed, self.frame_stack)
            self._policies = [self.policy]  # every lane's view; weights go to all of them
            if not self._wait_for_policy(env, should_stop):
                return self._stop_reason if self._stop else "interrupted"
            for lane_env in envs[1:]:  # shares the module and weights, has its own caches
                self._policies.append(self.policy.fork(lane_env.num_envs,
                                                       self.seed + LANE_B_SEED_OFFSET))
            if len(envs) == 1:
                return self._loop(SequentialStepper(env, self.policy), max_agent_steps,
                                  should_stop)
            # Leaving the `with` waits for the worker, so envs close only after its last call.
            with ThreadPoolExecutor(1, thread_name_prefix=f"actor{self.actor_id}-policy") as pool:
                return self._loop(OverlappedStepper(envs, self._policies, pool),
                                  max_agent_steps, should_stop)
        finally:
            for lane_env in envs:
                lane_env.close()
            self.sub.close(linger=0)
            self.push.close(linger=1000)  # let queued chunks reach the learner
            ctx.term()

    def _log_renderer(self) -> None:
        if not self.render:
            self.renderer = "none (no frames: the encoder needs no pixels)"
        elif self.env_cfg.backend == "numpy" or not self.probe_renderer:
            self.renderer = "numpy (no GL)" if self.env_cfg.backend == "numpy" else "not probed"
        else:
            from actors.envs.render_probe import probe_rendering  # noqa: PLC0415 (subprocess)
            self.renderer = probe_rendering(self.env_cfg.backend, self.env_cfg.task,
                                            image_size=self.env_cfg.image_size,
                                            camera=self.env_cfg.camera)
        log.info("actor %d (pid %d): task %s on %s, renderer: %s", self.actor_id, os.getpid(),
                 self.env_cfg.task, self.env_cfg.backend, self.renderer)

    def _wait_for_policy(self, env: VecEnv, should_stop: Callable[[], bool]) -> bool:
        """Send hello every hello_every_s until a policy arrives; False if told to stop.
        A policy that arrives before any hello could be sent (the broadcast connected first: the
        learner's start-up broadcast, or a slower CURVE handshake on the data socket) answered
        no hello of ours: one is owed, or the learner would refuse our steps for good."""
        sent = False
        warner = NoReplyWarner(f"actor {self.actor_id}", self.endpoints.data,
                               self.no_reply_warn_s)
        while not self.policy.ready:
            if self._stop or should_stop():
                return False
            warner.poll()
            sent = self._hello(env) or sent
            deadline = time.monotonic() + self.hello_every_s
            while not self.policy.ready and not self._stop:
                left_ms = int((deadline - time.monotonic()) * 1000)
                if left_ms <= 0:
                    break
                self._receive(timeout_ms=left_ms)
        log.info("actor %d: policy version %d (random=%s)", self.actor_id, self.policy.version,
                 self.policy.random)
        self._hello_owed = self._hello_owed or not sent
        return True

    def _hello(self, env: VecEnv, wait_ms: int = 0) -> bool:
        """Send hello; False if it could not be sent now (no learner connected, or a full
        queue): the caller tries again. wait_ms: wait that long for room in the queue first (an
        owed hello: the blocking steps sends would otherwise refill the queue before every
        attempt, and the learner refuses those steps until the hello arrives)."""
        if wait_ms > 0 and not self.push.poll(wait_ms, zmq.POLLOUT):
            return False
        msg = P.hello_message(self.actor_id, self.env_cfg.task, os.getpid(), env.obs_shape,
                              env.action_dim, seq=self._out_seq, state_dim=env.state_dim,
                              role=P.ACTOR, settings=self.settings)
        self._out_seq += 1
        try:  # NOBLOCK: with no learner connected (IMMEDIATE) a hello is simply not sent
            send_message(self.push, msg, zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def _loop(self, stepper: SequentialStepper | OverlappedStepper,
              max_agent_steps: int | None, should_stop: Callable[[], bool]) -> str:
        env = stepper.envs[0]
        n = stepper.num_envs
        policy = self.policy
        sender = StreamSender(self._send, self.actor_id, n, env.obs_shape, env.action_dim,
                              env.state_dim, self.steps_per_message, frames=env.renders)
        meter = Meter(n)
        batch = stepper.reset()
        no_action = np.zeros((n, env.action_dim), np.float32)
        sender.add(batch.frames, no_action, batch.reward, batch.flags, policy.version, batch.cam,
                   batch.state, policy.version)
        meter.record(batch.reward, batch.flags)
        agent_steps = 0
        self._last_heard = time.monotonic()
        last_stats = time.monotonic()
        reason = "interrupted"
        while True:
            batch, actions, versions = stepper.step(meter)
            t2 = time.perf_counter()
            recorded = np.where(((batch.flags & FIRST) != 0)[:, None], no_action, actions)
            sender.add(batch.frames, recorded, batch.reward, batch.flags, versions, batch.cam,
                       batch.state, policy.version)
            meter.send_s += time.perf_counter() - t2
            agent_steps += int(np.count_nonzero((batch.flags & FIRST) == 0))
            meter.record(batch.reward, batch.flags)
            stepper.settle(meter)  # the worker is idle from here: weights and eval may touch
            self._receive(timeout_ms=0)  # the module
            if self.gate.holds(sender.next_index):  # at the grant: flush, then wait for more
                sender.flush(self.policy.version)
                meter.grant_wait_s += self.gate.wait(
                    lambda: sender.next_index, lambda ms: self._receive_waiting(env, ms),
                    lambda: self._stop or should_stop())
            now = time.monotonic()
            if now - last_stats >= self.stats_every_s:
                self._send_stats(meter, sender, env, now - last_stats)
                last_stats = now
            self._hello_if_due(env, self.silence_hello_s,
                               OWED_HELLO_WAIT_MS if self._hello_owed else 0)
            if self._stop:
                reason = self._stop_reason
                break
            if max_agent_steps is not None and agent_steps >= max_agent_steps:
                reason = "steps"
                break
            if should_stop():
                break
        sender.flush(policy.version)
        self._send_stats(meter, sender, env, time.monotonic() - last_stats)
        return reason

    # ------------------------------------------------------------------ messages
    def _send(self, msg: P.Message) -> None:
        self.inbox.send(msg)  # blocks while the queue is full (backpressure)

    def _receive(self, timeout_ms: int) -> None:
        """Handle every message that is waiting (or arrives within timeout_ms for the first)."""
        self.inbox.receive(timeout_ms, self._on_broadcast)  # what came while sending first

    def _receive_waiting(self, env: VecEnv, timeout_ms: int) -> None:
        """At a grant: receive; hello if owed or the learner is silent (a new one grants none)."""
        self._receive(timeout_ms)
        self._hello_if_due(env, WAIT_SILENCE_S)

    def _hello_if_due(self, env: VecEnv, silence_s: float, wait_ms: int = 0) -> None:
        """Hello if owed or nothing was heard for silence_s (a new learner answers: policy)."""
        now = time.monotonic()
        if (self._hello_owed or now - self._last_heard > silence_s) and self._hello(env, wait_ms):
            self._last_heard, self._hello_owed = now, False

    def _on_broadcast(self, msg: P.Message) -> None:
        self._last_heard = time.monotonic()
        self._handle(msg)

    def _check_run(self, msg: P.Message) -> None:
        """A policy/weights message from a NEW learner process (a restart): say hello at once,
        since it refuses steps from actors whose hello it has not checked."""
        run = msg.meta.get("run")
        if run is None or run == self._run:
            return
        if self._run is not None:
            log.info("actor %d: a new learner process is broadcasting; saying hello",
                     self.actor_id)
            self._hello_owed = True  # the main loop says hello until one is sent
        self._run, self.gate.upto = run, None  # grants were that learner's

    def _handle(self, msg: P.Message) -> None:
        # Called between steps only (the overlap worker is idle): every lane's policy view gets
        # the update (lanes share one module: weights are loaded into it once; versions and
        # caches are per view). A lane loading a NEW script compiles its own copy: rare (a restarted
        # learner with another module), and correct.
        if msg.kind in (P.POLICY, P.WEIGHTS, P.GRANT):
            self._check_run(msg)
        if msg.kind == P.GRANT and self.gate.on_grant(
                msg, self.policy.version if self.policy.ready else None, time.monotonic()):
            log.info("actor %d: missed weights %d (holds %d); asking for the policy",
                     self.actor_id, msg.version, self.policy.version)
            self._hello_owed = True  # the main loop says hello until one is sent
        elif msg.kind == P.POLICY:
            if (not self.policy.ready or msg.version != self.policy.version
                    or msg.meta["random"] != self.policy.random):
                try:
                    for policy in self._policies:
                        policy.load_policy(msg.arrays["script"], msg.arrays["weights"],
                                           msg.meta["layout"], msg.version, msg.meta["random"])
                except (RuntimeError, ValueError) as e:  # not TorchScript, or weights misfit
                    self.rejects.add(P.GarbageError(f"a policy that cannot be loaded ({e!s:.200})"),
                                     "learner broadcast")
        elif msg.kind == P.WEIGHTS:
            if self.policy.ready and msg.version != self.policy.version:
                # Weights come only after the random phase: acting switches to the policy.
                try:
                    self.policy.apply_weights(msg.version, P.weights_of(msg), msg.meta["layout"],
                                              random=False)
                    for fork in self._policies[1:]:  # they share the module: loaded once above
                        fork.weights_changed(msg.version, random=False)
                except ValueError as e:  # another module (a learner restarted with a new config)
                    log.warning("actor %d: weights do not fit the held policy (%s); asking for "
                                "the policy", self.actor_id, e)
                    self._hello_owed = True  # the main loop says hello until one is sent
        elif msg.kind == P.STOP:
            log.info("actor %d: the learner ended the run", self.actor_id)
            self._stop = True
        elif msg.kind == P.REFUSE and msg.meta["role"] == P.ACTOR \
                and msg.meta["target_actor"] == self.actor_id:
            log.error("actor %d: refused by the learner: %s", self.actor_id, msg.meta["reason"])
            self._stop, self._stop_reason = True, "refused"
        # `eval` requests are for the evaluator processes (actors/eval_loop.py): training actors
        # never pause for an evaluation.

    def _send_stats(self, meter: Meter, sender: StreamSender, env: VecEnv, wall_s: float) -> None:
        perf = meter.perf(sender, env.action_repeat, wall_s, self.policy.version)
        episodes = meter.episodes[:MAX_EPISODES_PER_STATS]
        self._send(P.stats_message(self.actor_id, self._out_seq, episodes, perf,
                                   self.policy.version))
        self._out_seq += 1
        if self.on_stats is not None:
            self.on_stats({"perf": perf, "episodes": episodes, "agent_steps": meter.total_steps,
                           "episodes_total": meter.total_episodes})
        meter.reset_interval(sender)
