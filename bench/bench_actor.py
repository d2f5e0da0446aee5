"""Actor overhead: frames/s of the bare env loop vs the full actor loop, same process settings.

bare: env.step(uniform random actions) on one VecEnv of the same number of envs, nothing else.
full: ActorLoop (TorchScript fpac policy with the default agent config, point cache,
StreamSender) sending to a drain learner in another process (PULL + protocol.decode, PUB
answering hello with a non-random policy), either sequential (act then render, main thread) or
overlapped (2 envs in two lanes: one lane's policy in a worker thread while the other renders).
Everything runs in this process with torch.set_num_threads(1). Variants are measured in
interleaved rounds (bare 1 env, full 1 env, bare 2 envs, full 2 envs sequential, full 2 envs
overlapped, repeat) and reported as medians, each ratio to the bare loop of the same number of
envs. Target: full / bare >= 0.9 (rendering dominates).

    flock /tmp/bench.lock .venv/bin/python bench/bench_actor.py --seconds 6 --rounds 3 \
        --configs dmc:cartpole_swingup numpy:point_reach
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing as mp
import os
import statistics
import sys
import time

import numpy as np
import torch
import zmq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench.provenance import provenance  # noqa: E402

from actors.actor_loop import ActorLoop  # noqa: E402
from actors.envs import make_vec_env  # noqa: E402
from bench.bench_transport import _machine  # noqa: E402
from fpac_async.wire import protocol as P  # noqa: E402
from fpac_async.config import EnvConfig, RunConfig, resolve  # noqa: E402

# (name, envs per actor, full-loop mode): mode None is the bare env loop.
VARIANTS = [("bare1", 1, None), ("seq1", 1, "sequential"), ("bare2", 2, None),
            ("seq2", 2, "sequential"), ("overlap2", 2, "overlapped")]

RESULTS = os.path.join(ROOT, "bench", "results", "actor.jsonl")


def _drain_learner(port: int, obs_shape: tuple, action_dim: int, ready: mp.Event,
                   state_dim: int = 0) -> None:
    """PULL + decode everything; answer hello with the default-config policy (random=False),
    or the state encoder's when state_dim > 0."""
    from fpac_async.config import AgentConfig  # noqa: PLC0415
    from fpac_async.agent.export import export_policy, flat_weights, script_to_bytes  # noqa: PLC0415
    from fpac_async.agent.sac import SAC  # noqa: PLC0415
    from fpac_async.wire.transport import pub_socket, pull_socket, send_message  # noqa: PLC0415
    torch.set_num_threads(1)
    agent = AgentConfig(encoder="state") if state_dim else AgentConfig()
    module = export_policy(SAC(agent, (6, *obs_shape[1:]), action_dim, state_dim=state_dim))
    script, (flat, layout) = script_to_bytes(module), flat_weights(module)
    layout = [[n, list(s)] for n, s in layout]
    ctx = zmq.Context()
    pull = pull_socket(ctx, f"tcp://127.0.0.1:{port}")
    pub = pub_socket(ctx, f"tcp://127.0.0.1:{port + 1}")
    ready.set()
    while True:  # until terminated
        msg = P.decode(pull.recv_multipart(copy=False))
        if msg.kind == P.HELLO:
            send_message(pub, P.policy_message(0, 1, script, flat, layout, random=False))


def bare_fps(env_cfg: EnvConfig, seconds: float, seed: int, render: bool = True) -> float:
    """Agent steps/s (one render each, unless render=False) of the bare env loop."""
    env = make_vec_env(env_cfg, seed, env_cfg.envs_per_actor, render=render)
    rng = np.random.default_rng(seed)
    env.reset()
    for _ in range(5):  # warm-up (first renders build GL state)
        env.step(rng.uniform(-1, 1, (env.num_envs, env.action_dim)).astype(np.float32))
    frames, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        env.step(rng.uniform(-1, 1, (env.num_envs, env.action_dim)).astype(np.float32))
        frames += env.num_envs
    elapsed = time.perf_counter() - start
    env.close()
    return frames / elapsed


def full_fps(env_cfg: EnvConfig, seconds: float, seed: int, port: int,
             overlap: bool) -> tuple[float, dict]:
    """Frames/s of ActorLoop from its stats intervals after the first (warm-up) one."""
    return loop_rate(env_cfg, seconds, seed, port, "agent_sps", overlap=overlap)


def loop_rate(env_cfg: EnvConfig, seconds: float, seed: int, port: int, key: str,
              **loop_kwargs) -> tuple[float, dict]:
    """ActorLoop's rate `key` (a perf field: agent_sps, env_sps) over its stats intervals after
    the first (warm-up) one, and the fractions of its time in render / policy / send."""
    intervals: list[dict] = []
    deadline = [float("inf")]

    def on_stats(s: dict) -> None:
        intervals.append(s["perf"])
        if len(intervals) == 1:
            deadline[0] = time.monotonic() + seconds

    loop = ActorLoop(0, env_cfg, f"127.0.0.1:{port}", seed, steps_per_message=16,
                     stats_every_s=1.0, probe_renderer=False, on_stats=on_stats, **loop_kwargs)
    loop.run(should_stop=lambda: time.monotonic() > deadline[0])
    timed = intervals[1:-1] or intervals
    wall = sum(p["wall_s"] for p in timed)
    steps = sum(p[key] * p["wall_s"] for p in timed)
    split = {k: sum(p[k] for p in timed) / wall for k in ("render_s", "policy_s", "send_s")}
    return steps / wall, split


def run_config(backend: str, task: str, seconds: float, rounds: int, port: int) -> list[dict]:
    """One row per full-loop variant: medians over interleaved rounds, ratio to its bare loop."""
    base = resolve(RunConfig(env=EnvConfig(task=task, backend=backend))).env
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    probe = make_vec_env(base, 0, 1)
    shape, adim = probe.obs_shape, probe.action_dim
    probe.close()
    drain = ctx.Process(target=_drain_learner, args=(port, shape, adim, ready), daemon=True)
    drain.start()
    ready.wait(120)
    fps: dict[str, list[float]] = {name: [] for name, _, _ in VARIANTS}
    splits: dict[str, list[dict]] = {name: [] for name, _, mode in VARIANTS if mode}
    try:
        for r in range(rounds):
            for name, n, mode in VARIANTS:
                env_cfg = dataclasses.replace(base, envs_per_actor=n)
                if mode is None:
                    fps[name].append(bare_fps(env_cfg, seconds, seed=1))
                else:
                    f, split = full_fps(env_cfg, seconds, 1, port, mode == "overlapped")
                    fps[name].append(f)
                    splits[name].append(split)
            print(f"round {r + 1}/{rounds} {backend}:{task}: "
                  + ", ".join(f"{k} {v[-1]:.1f}" for k, v in fps.items()), flush=True)
    finally:
        drain.terminate()
        drain.join(5)
    rows = []
    for name, n, mode in VARIANTS:
        if mode is None:
            continue
        bare = fps[f"bare{n}"]
        ratios = [f / b for f, b in zip(fps[name], bare)]  # per round: drift cancels
        rows.append({"backend": backend, "task": task, "image_size": base.image_size,
                     "envs_per_actor": n, "mode": mode, "rounds": rounds,
                     "bare_fps": statistics.median(bare), "full_fps": statistics.median(fps[name]),
                     "ratio": statistics.median(ratios), "bare_fps_rounds": bare,
                     "full_fps_rounds": fps[name],
                     "full_time_fractions": {k: statistics.median(s[k] for s in splits[name])
                                             for k in ("render_s", "policy_s", "send_s")}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="timed seconds per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians reported)")
    ap.add_argument("--configs", nargs="+", default=["dmc:cartpole_swingup",
                                                     "envpool:cartpole_swingup",
                                                     "numpy:point_reach"],
                    help="BACKEND:TASK pairs (a backend that cannot render here is skipped)")
    ap.add_argument("--port", type=int, default=47511)
    ap.add_argument("--note", default="")
    ap.add_argument("--no-save", action="store_true", help="print only (smoke runs)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    from actors.envs.render_probe import RenderingError, probe_rendering  # noqa: PLC0415
    rows = []
    for i, item in enumerate(args.configs):
        backend, task = item.split(":")
        try:
            renderer = probe_rendering(backend, task, image_size=0)  # 0: the preset
        except RenderingError as e:
            print(f"skip {item}: {e}")
            continue
        for row in run_config(backend, task, args.seconds, args.rounds, args.port + 2 * i):
            row["renderer"] = renderer
            rows.append(row)
    print(f"{'backend':>8} {'task':>18} {'size':>4} {'envs':>4} {'mode':>10} {'bare f/s':>9} "
          f"{'full f/s':>9} {'ratio':>6} {'render/policy/send':>20}")
    for r in rows:
        f = r["full_time_fractions"]
        print(f"{r['backend']:>8} {r['task']:>18} {r['image_size']:>4} {r['envs_per_actor']:>4} "
              f"{r['mode']:>10} {r['bare_fps']:>9.1f} {r['full_fps']:>9.1f} {r['ratio']:>6.2f} "
              f"{f['render_s']:>6.2f}/{f['policy_s']:.2f}/{f['send_s']:.2f}")
    print("ratio: median over rounds of full / bare (same envs, same round); policy: the part of "
          "the policy's time the main thread waits for (all of it when sequential)")
    if args.no_save:
        return
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "a") as fh:
        for r in rows:
            fh.write(json.dumps({**_machine(), **provenance(), "bench": "actor", "seconds": args.seconds,
                                 "note": args.note, **r}) + "\n")


if __name__ == "__main__":
    main()
