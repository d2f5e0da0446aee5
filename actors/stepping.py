"""How an actor steps its envs: sequentially, or in two lanes whose policy and rendering overlap.

Overlap: the envs are split into two lanes (two VecEnvs, each with its own ActorPolicy view of
the same module) and a worker thread runs one lane's policy while the main thread renders the
other lane. MuJoCo rendering and torch ops release the GIL, so the policy's cost hides behind
rendering (bench/bench_actor.py measures it). Meter collects an actor's episode returns and
time fractions for its `stats` messages.
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from actors.envs.base import ENDED, FIRST, StepBatch, VecEnv
from actors.policy import ActorPolicy
from actors.sender import StreamSender


Record = tuple[StepBatch, np.ndarray, np.ndarray]  # batch, actions f32 [N,A], versions i32 [N]


class SequentialStepper:
    """One lane: act, then render, on the main thread."""

    def __init__(self, env: VecEnv, policy: ActorPolicy) -> None:
        self.envs = [env]
        self.num_envs = env.num_envs
        self._env = env
        self._policy = policy
        self._batch: StepBatch | None = None

    def reset(self) -> StepBatch:
        self._batch = self._env.reset()
        return self._batch

    def step(self, meter: Meter) -> Record:
        b = self._batch
        t0 = time.perf_counter()
        actions = self._policy.act(b.frames, b.flags, b.cam, b.state)
        versions = np.full(self.num_envs, self._policy.version, np.int32)
        t1 = time.perf_counter()
        self._batch = self._env.step(actions)
        meter.policy_s += t1 - t0
        meter.render_s += time.perf_counter() - t1
        return self._batch, actions, versions

    def settle(self, meter: Meter | None = None) -> None:
        """Nothing runs in the background here."""


class OverlappedStepper:
    """Two lanes A and B; per step, with one worker thread:
        worker: act(B's latest frames)  ||  main: render A with A's pending action
        worker: act(A's new frames)     ||  main: render B; the caller sends the record
    settle() waits for A's next action, after which the worker is idle until the next step.
    Policy calls never run at the same time (one worker, each awaited before the next is
    submitted), so torch's global generator draws exploration noise in a fixed order."""

    def __init__(self, envs: list[VecEnv], policies: list[ActorPolicy],
                 pool: ThreadPoolExecutor) -> None:
        if len(envs) != 2 or len(policies) != 2:
            raise ValueError("the overlapped stepper needs exactly two lanes")
        self.envs = envs
        self.num_envs = sum(e.num_envs for e in envs)
        self._policies = policies
        self._pool = pool
        self._batches: list[StepBatch] = []
        self._pending: Future | None = None  # A's next (actions, version) from the worker
        self._next_a: tuple[np.ndarray, int] | None = None

    def reset(self) -> StepBatch:
        self._batches = [env.reset() for env in self.envs]
        self._pending = self._pool.submit(self._act, 0)
        return concat_batches(self._batches)

    def _act(self, lane: int) -> tuple[np.ndarray, int]:
        b, policy = self._batches[lane], self._policies[lane]
        return policy.act(b.frames, b.flags, b.cam, b.state), policy.version

    def step(self, meter: Meter) -> Record:
        self.settle(meter)
        actions_a, version_a = self._next_a
        t0 = time.perf_counter()
        future_b = self._pool.submit(self._act, 1)
        self._batches[0] = self.envs[0].step(actions_a)
        t1 = time.perf_counter()
        actions_b, version_b = future_b.result()
        t2 = time.perf_counter()
        self._pending = self._pool.submit(self._act, 0)
        self._batches[1] = self.envs[1].step(actions_b)
        meter.render_s += (t1 - t0) + (time.perf_counter() - t2)
        meter.policy_s += t2 - t1  # only the policy time NOT hidden behind rendering
        n_a = self.envs[0].num_envs
        versions = np.empty(self.num_envs, np.int32)
        versions[:n_a], versions[n_a:] = version_a, version_b
        return concat_batches(self._batches), np.concatenate([actions_a, actions_b]), versions

    def settle(self, meter: Meter | None = None) -> None:
        """Wait for the worker's pending call (A's next action); then nothing touches the module."""
        if self._pending is None:
            return
        t0 = time.perf_counter()
        future, self._pending = self._pending, None
        self._next_a = future.result()
        if meter is not None:
            meter.policy_s += time.perf_counter() - t0


def concat_batches(batches: list[StepBatch]) -> StepBatch:
    """The lanes' batches as one batch of all envs (lane A's envs first)."""
    states = [b.state for b in batches]
    frames = None if batches[0].frames is None else np.concatenate([b.frames for b in batches])
    return StepBatch(frames=frames,
                     reward=np.concatenate([b.reward for b in batches]),
                     flags=np.concatenate([b.flags for b in batches]),
                     state=None if states[0] is None else np.concatenate(states),
                     cam=np.concatenate([b.cam for b in batches]))


class Meter:
    """Per-interval counters for `stats`: finished episodes and where the time went."""

    def __init__(self, num_envs: int) -> None:
        self.ret = np.zeros(num_envs, np.float64)
        self.length = np.zeros(num_envs, np.int64)
        self.episodes: list[dict] = []
        self.total_steps = 0
        self.total_episodes = 0
        self.steps = 0
        self.policy_s = self.render_s = self.send_s = self.grant_wait_s = 0.0
        self._send_s0 = 0.0
        self._records0 = 0
        self._lag0 = 0

    def record(self, reward: np.ndarray, flags: np.ndarray) -> None:
        first = (flags & FIRST) != 0
        self.ret[first] = 0.0
        self.length[first] = 0
        live = ~first
        self.ret[live] += reward[live]
        self.length[live] += 1
        n_live = int(np.count_nonzero(live))
        self.steps += n_live
        self.total_steps += n_live
        for e in np.flatnonzero(live & ((flags & ENDED) != 0)):
            self.episodes.append({"return": float(self.ret[e]), "length": int(self.length[e]),
                                  "env": int(e)})
            self.total_episodes += 1

    def perf(self, sender: StreamSender, action_repeat: int, wall_s: float,
             version: int) -> dict[str, float]:
        wall = max(wall_s, 1e-9)
        records = sender.records_sent - self._records0
        lag = (sender.lag_sum - self._lag0) / records if records else 0.0
        return {"env_sps": self.steps * action_repeat / wall, "agent_sps": self.steps / wall,
                "wall_s": wall_s, "render_s": self.render_s, "policy_s": self.policy_s,
                "send_s": self.send_s, "render_frac": self.render_s / wall,
                "policy_frac": self.policy_s / wall, "send_frac": self.send_s / wall,
                "send_blocked_s": sender.send_seconds - self._send_s0, "policy_lag": lag,
                "grant_wait_s": self.grant_wait_s, "version": float(version)}

    def reset_interval(self, sender: StreamSender) -> None:
        self.episodes = []
        self.steps = 0
        self.policy_s = self.render_s = self.send_s = self.grant_wait_s = 0.0
        self._send_s0 = sender.send_seconds
        self._records0 = sender.records_sent
        self._lag0 = sender.lag_sum

