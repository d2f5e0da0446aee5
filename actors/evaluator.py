"""Deterministic evaluation episodes on an env instance separate from the training streams.

An `eval` request (docs/INTERFACES.md) names one evaluator process (actors/eval_loop.py); it runs
the requested number of episodes with the deterministic policy (tanh of the mean action) and answers `eval_result` with
each episode's return (env reward units, summed over the action repeat) and length (agent steps).

Episodes run in rounds of up to `max_parallel` envs: every round resets all envs and waits until
each has ended once, so short (terminated) episodes are not over-represented as they would be if
the first finished episodes of a continuous stream were taken.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from actors.envs.base import ENDED, VecEnv
from actors.policy import ActorPolicy

EnvFactory = Callable[[int], VecEnv]  # num_envs -> a fresh VecEnv
EVAL_SEED_OFFSET = 500  # eval envs: seed + 500 (+ env index), away from the training envs' seeds


class Evaluator:
    """Owns one eval VecEnv (made on first use, then kept) and a policy view for it."""

    def __init__(self, make_env: EnvFactory, seed: int, max_parallel: int = 10) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be >= 1")
        self._make_env = make_env
        self.seed = seed
        self.max_parallel = max_parallel
        self._env: VecEnv | None = None

    def open(self, num_envs: int) -> VecEnv:
        """The eval VecEnv (made on first use with num_envs envs, then kept)."""
        if self._env is None:
            self._env = self._make_env(max(1, min(num_envs, self.max_parallel)))
        return self._env

    def run(self, source: ActorPolicy, episodes: int,
            on_step: Callable[[int], None] = lambda done: None,
            should_stop: Callable[[], bool] = lambda: False) -> tuple[list[float], list[int]]:
        """Returns and lengths of `episodes` deterministic episodes of `source`'s current policy.
        on_step(episodes done) runs after every env step (heartbeats, broadcasts); should_stop()
        ends it early, returning the episodes finished so far."""
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1; got {episodes}")
        if source.module is None:
            raise RuntimeError("no policy to evaluate yet")
        env = self.open(episodes)
        # Its own caches (points / stacks), sharing the module and weights of the source policy.
        policy = source.fork(env.num_envs, self.seed)
        policy.random = False  # evaluate the learner's policy even during its random phase
        returns: list[float] = []
        lengths: list[int] = []
        while len(returns) < episodes and not should_stop():
            r, n = self._round(env, policy, lambda: on_step(len(returns)), should_stop)
            returns.extend(r[: episodes - len(returns)])
            lengths.extend(n[: episodes - len(lengths)])
        return returns, lengths

    @staticmethod
    def _round(env: VecEnv, policy: ActorPolicy, on_step: Callable[[], None],
               should_stop: Callable[[], bool]) -> tuple[list[float], list[int]]:
        """One episode per env; [] if should_stop() ended it early."""
        batch = env.reset()
        total = np.zeros(env.num_envs, np.float64)
        length = np.zeros(env.num_envs, np.int64)
        done = np.zeros(env.num_envs, bool)
        while not done.all():
            actions = policy.act(batch.frames, batch.flags, batch.cam, batch.state,
                                 deterministic=True)
            batch = env.step(actions)
            live = ~done  # an env that already ended is being reset: ignore its records
            total[live] += batch.reward[live]
            length[live] += 1
            done |= live & ((batch.flags & ENDED) != 0)
            on_step()
            if should_stop():
                return [], []
        return [float(x) for x in total], [int(x) for x in length]

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
