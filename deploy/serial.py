"""Serial runner: the service's components (env backend, actor policy, replay, trainer, SAC) in
ONE process, stepped in turn, with no sockets (sample-factory's "serial mode").

It does what the actor and learner processes do, in the same order and with the same objects:
- the env is `actors.envs.make_vec_env`; acting goes through `actors.policy.ActorPolicy` holding
  the EXPORTED TorchScript policy (`fpac_async.agent.export`), so the export path and the actor's
  feature-point cache are exercised exactly as in a real run;
- records go into `learner.replay.Replay` one per step, as the actors' `steps` stream does:
  (frame, action that led to it (zeros at FIRST), reward, flags, policy version);
- `learner.trainer.Trainer` runs the updates the replay ratio owes (docs/INTERFACES.md,
  "Counters"): none during the first `replay.initial_random_steps` agent steps, which are taken
  with uniform random actions;
- "broadcasts" load the flat weights into the actor's TorchScript module every
  `learner.weights_every` updates (version + 1 each), and once when the random phase ends;
- evaluation runs deterministic episodes with `actors.evaluator.Evaluator` on a separate env
  instance, made afresh with the same seed each time so every evaluation (and the uniform random
  baseline) sees the same start states.

Used by tests (tests/test_serial_learning.py) and for debugging: `python -m deploy.serial`.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import time
from typing import Callable

import numpy as np
import torch

from actors.envs import FIRST, make_vec_env
from actors.evaluator import EVAL_SEED_OFFSET, Evaluator
from actors.policy import ActorPolicy
from fpac_async.cli_args import add_config_args, config_from_args
from fpac_async.config import EnvConfig, RunConfig, resolve, with_task_defaults
from fpac_async.agent.export import export_policy, script_to_bytes
from fpac_async.agent.sac import SAC
from fpac_async.wire.bf16 import from_bf16, to_bf16
from learner.broadcaster import policy_weights
from learner.replay import Replay
from learner.trainer import Trainer



def tiny_config(seed: int = 0) -> RunConfig:
    """Settings that learn point_reach in a few thousand agent steps on 2 CPU cores
    (measured: bench/results/tiny_learning.jsonl): the task's TASK_DEFAULTS. Used by the CI
    learning tests."""
    cfg = with_task_defaults(RunConfig(env=EnvConfig(task="point_reach"), seed=seed))
    cfg = dataclasses.replace(cfg, learner=dataclasses.replace(cfg.learner, gpus=0,
                                                                weights_every=100,
                                                                eval_episodes=10))
    return resolve(cfg)


class _UniformPolicy:
    """Stand-in for ActorPolicy in `Evaluator.run`: uniform random actions in [-1, 1]^A."""

    module = "uniform"  # Evaluator only checks that a module is present

    def __init__(self, action_dim: int, seed: int) -> None:
        self.action_dim = action_dim
        self.random = True
        self._rng = np.random.default_rng(seed)

    def fork(self, num_envs: int, seed: int) -> _UniformPolicy:
        return _UniformPolicy(self.action_dim, seed)

    def act(self, frames: np.ndarray, flags: np.ndarray, cam=None, state=None,
            deterministic: bool = False) -> np.ndarray:
        return self._rng.uniform(-1.0, 1.0, (len(flags), self.action_dim)).astype(np.float32)


def run_serial(cfg: RunConfig, agent_steps: int, eval_every: int, eval_episodes: int,
               num_envs: int = 1, log: Callable[[str], None] = print) -> dict:
    """Train for `agent_steps` agent steps (summed over `num_envs` envs); evaluate every
    `eval_every` env steps and at the end. Returns {"eval_returns": [(env_steps, mean_return)],
    "random_return", "seconds", "updates"}. `cfg` must be resolved (fpac_async.config.resolve)."""
    if agent_steps < 1 or eval_every < 1 or eval_episodes < 1 or num_envs < 1:
        raise ValueError("agent_steps, eval_every, eval_episodes and num_envs must be >= 1")
    if cfg.env.action_repeat < 1 or cfg.env.image_size < 1:
        raise ValueError("run_serial needs a resolved config (fpac_async.config.resolve)")
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    pixels = cfg.agent.encoder != "state"  # the state encoder: no rendering, no frames stored
    env = make_vec_env(cfg.env, cfg.seed, num_envs, render=pixels)
    stack, ar = cfg.agent.frame_stack, env.action_repeat
    state_dim = env.state_dim if cfg.agent.encoder == "state" else 0
    obs_shape = (3 * stack, *env.obs_shape[1:])
    sac = SAC(cfg.agent, obs_shape, env.action_dim, "cpu", state_dim=state_dim)
    # Every record fits: per env at most (steps + episodes + 1) <= 2 * steps + 1 records.
    capacity = min(cfg.replay.capacity, 2 * (agent_steps + num_envs) + 1)
    replay = Replay(capacity, env.obs_shape, env.action_dim, stack, state_dim, "cpu",
                    pin_memory=False, seed=cfg.seed, batch_size=cfg.agent.batch_size,
                    pixels=pixels)
    trainer = Trainer(sac, replay, cfg.agent, cfg.replay, cfg.agent.batch_size, "cpu")

    policy = ActorPolicy(num_envs, env.action_dim, cfg.seed, stack)
    flat, layout = policy_weights(sac)
    policy.load_policy(script_to_bytes(export_policy(sac)), flat, layout, version=0, random=True)

    def evaluate(source) -> float:
        evaluator = Evaluator(lambda n: make_vec_env(cfg.env, cfg.seed + EVAL_SEED_OFFSET, n,
                                                     render=pixels),
                              seed=cfg.seed + EVAL_SEED_OFFSET)
        try:
            returns, _ = evaluator.run(source, eval_episodes)
        finally:
            evaluator.close()
        return float(np.mean(returns))

    random_return = evaluate(_UniformPolicy(env.action_dim, cfg.seed + EVAL_SEED_OFFSET))
    log(f"serial: {cfg.env.task}, uniform random policy: mean return {random_return:.2f} "
        f"over {eval_episodes} episodes")

    version, broadcast_at = 0, 0

    def broadcast() -> None:
        nonlocal version, broadcast_at
        version += 1
        w, lay = policy_weights(sac)
        if cfg.learner.weights_wire == "bf16":  # act as the service's actors would
            w = from_bf16(to_bf16(w))
        policy.apply_weights(version, w, lay, random=False)
        broadcast_at = trainer.updates

    batch = env.reset()
    no_action = np.zeros((num_envs, env.action_dim), np.float32)
    step_index = np.zeros(num_envs, np.int64)  # next record index per (0, env) stream

    def record(actions: np.ndarray, acted_version: int) -> None:
        versions = np.full(1, acted_version, np.int32)
        for e in range(num_envs):
            frames = None if batch.frames is None else batch.frames[e:e + 1]
            replay.add((0, e), int(step_index[e]), frames, actions[e:e + 1],
                       batch.reward[e:e + 1], batch.flags[e:e + 1], versions, batch.cam[e:e + 1],
                       None if batch.state is None else batch.state[e:e + 1])
        step_index[:] += 1

    record(no_action, version)
    steps, eval_returns = 0, []
    next_eval = eval_every
    while steps < agent_steps:
        actions = policy.act(batch.frames, batch.flags, batch.cam, batch.state)
        acted_version = policy.version
        batch = env.step(actions)
        first = (batch.flags & FIRST) != 0
        record(np.where(first[:, None], no_action, actions), acted_version)
        steps += int(np.count_nonzero(~first))
        if policy.random and steps >= cfg.replay.initial_random_steps:
            broadcast()  # the random phase is over: act with the (untrained) policy from now on
        while trainer.owed(steps) > 0:
            chunk = cfg.learner.weights_every - (trainer.updates - broadcast_at)
            trainer.train(steps, steps * ar, max_updates=max(1, chunk))
            if trainer.updates - broadcast_at >= cfg.learner.weights_every:
                broadcast()
        if steps * ar >= next_eval or steps >= agent_steps:
            if steps >= agent_steps and trainer.updates != broadcast_at:
                broadcast()  # as the service: the final evaluation runs the final weights
            mean = evaluate(policy)
            eval_returns.append((steps * ar, mean))
            log(f"serial: {steps * ar} env steps, {trainer.updates} updates, version {version}: "
                f"eval return {mean:.2f} ({time.perf_counter() - start:.0f} s)")
            while next_eval <= steps * ar:
                next_eval += eval_every
    env.close()
    return {"eval_returns": eval_returns, "random_return": random_return,
            "seconds": time.perf_counter() - start, "updates": trainer.updates}


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except OSError:
        return ""
    return out.stdout.strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agent-steps", type=int, default=5000)
    parser.add_argument("--num-envs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on shared cores 2 threads were ~7x slower)")
    parser.add_argument("--record", default="", help="append the result to this JSONL file")
    parser.add_argument("--note", default="", help="free text stored with --record")
    add_config_args(parser, defaults=tiny_config())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = resolve(config_from_args(args, base=tiny_config()))
    load0 = os.getloadavg()[0]
    result = run_serial(cfg, args.agent_steps, cfg.learner.eval_every_env_steps,
                        cfg.learner.eval_episodes, args.num_envs)
    final = result["eval_returns"][-1][1]
    print(f"final eval return {final:.2f}, random {result['random_return']:.2f}, "
          f"{result['updates']} updates, {result['seconds']:.1f} s")
    if args.record:
        a, r = cfg.agent, cfg.replay
        row = {"bench": "tiny_learning", "machine": f"{platform.machine()} x{os.cpu_count()}",
               "commit": _git_commit(),
               "date": datetime.datetime.now().isoformat(timespec="seconds"),
               "task": cfg.env.task, "seed": cfg.seed, "agent_steps": args.agent_steps,
               "num_envs": args.num_envs, "threads": args.threads,
               "settings": {"num_points": a.num_points, "hidden_dim": a.hidden_dim,
                            "conv_channels": a.conv_channels, "batch_size": a.batch_size,
                            "lr": a.lr, "initial_random_steps": r.initial_random_steps,
                            "replay_ratio": r.replay_ratio,
                            "weights_every": cfg.learner.weights_every},
               "final_eval_return": final, "random_return": result["random_return"],
               "eval_returns": result["eval_returns"], "updates": result["updates"],
               "seconds": round(result["seconds"], 1), "load_avg_1min": [load0, os.getloadavg()[0]],
               "note": args.note}
        os.makedirs(os.path.dirname(os.path.abspath(args.record)), exist_ok=True)
        with open(args.record, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
