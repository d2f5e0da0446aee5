"""One actor's env steps/s for the SAC-state baseline, with and without rendering.

dmc cartpole_swingup (action repeat 8, 84x84 when rendered), the state encoder's policy. Per
render setting (on = what `--encoder state` did before: render and send every frame; off = the
encoder needs no pixels, so the actor never renders and sends state only):
  bare: env.step(uniform random actions) on one VecEnv of `--envs` envs, nothing else;
  full: ActorLoop (TorchScript state policy, StreamSender) sending to a drain learner in another
        process (PULL + protocol.decode, PUB answering hello with a non-random state policy).
Everything of the actor runs in this process with torch.set_num_threads(1). Variants are measured
in interleaved rounds and reported as medians; env steps = agent steps x action repeat. The load
average before and after each round is recorded: other jobs on the machine lower the figures.

    flock /tmp/bench.lock .venv/bin/python bench/bench_state_actor.py --seconds 6 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import statistics
import sys

import numpy as np
import torch
import zmq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("MUJOCO_GL", "egl")

from actors.envs import make_vec_env  # noqa: E402
from bench.bench_actor import _drain_learner, bare_fps, loop_rate  # noqa: E402
from bench.provenance import provenance  # noqa: E402
from fpac_async.config import EnvConfig, RunConfig, resolve  # noqa: E402

RESULTS = os.path.join(ROOT, "bench", "results", "state_actor.jsonl")
VARIANTS = [("bare", True), ("full", True), ("bare", False), ("full", False)]  # (loop, render)


def _versions() -> dict[str, str]:
    from importlib.metadata import version  # noqa: PLC0415
    return {"python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "mujoco": version("mujoco"),
            "dm_control": version("dm_control"), "pyzmq": zmq.__version__}


def bare_sps(env_cfg: EnvConfig, seconds: float, seed: int, render: bool) -> float:
    """Env steps/s of the bare env loop."""
    return bare_fps(env_cfg, seconds, seed, render) * env_cfg.action_repeat


def full_sps(env_cfg: EnvConfig, seconds: float, seed: int, port: int,
             render: bool) -> tuple[float, dict]:
    """Env steps/s of ActorLoop from its stats intervals after the first (warm-up) one."""
    return loop_rate(env_cfg, seconds, seed, port, "env_sps", render=render)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="timed seconds per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians reported)")
    ap.add_argument("--envs", type=int, default=2, help="envs per actor (the default config: 2)")
    ap.add_argument("--task", default="cartpole_swingup")
    ap.add_argument("--port", type=int, default=47531)
    ap.add_argument("--note", default="")
    ap.add_argument("--no-save", action="store_true", help="print only (smoke runs)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    from actors.envs.render_probe import probe_rendering  # noqa: PLC0415
    renderer = probe_rendering("dmc", args.task, image_size=0)
    base = resolve(RunConfig(env=EnvConfig(task=args.task, backend="dmc",
                                           envs_per_actor=args.envs))).env
    probe = make_vec_env(base, 0, 1, render=False)
    shape, adim, sdim = probe.obs_shape, probe.action_dim, probe.state_dim
    probe.close()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    drain = ctx.Process(target=_drain_learner, args=(args.port, shape, adim, ready, sdim),
                        daemon=True)
    drain.start()
    ready.wait(120)
    sps: dict[tuple[str, bool], list[float]] = {v: [] for v in VARIANTS}
    splits: dict[bool, list[dict]] = {True: [], False: []}
    loads: list[tuple[float, float]] = []
    try:
        for r in range(args.rounds):
            load0 = os.getloadavg()[0]
            for loop, render in VARIANTS:
                if loop == "bare":
                    sps[(loop, render)].append(bare_sps(base, args.seconds, 1, render))
                else:
                    value, split = full_sps(base, args.seconds, 1, args.port, render)
                    sps[(loop, render)].append(value)
                    splits[render].append(split)
            loads.append((load0, os.getloadavg()[0]))
            print(f"round {r + 1}/{args.rounds} (load {load0:.2f} -> {loads[-1][1]:.2f}): "
                  + ", ".join(f"{loop} render={'on' if rd else 'off'} {v[-1]:.0f}"
                              for (loop, rd), v in sps.items()), flush=True)
    finally:
        drain.terminate()
        drain.join(5)
    med = {k: statistics.median(v) for k, v in sps.items()}
    row = {**provenance(), "bench": "state_actor", "renderer": renderer,
           "more_versions": _versions(),
           "task": args.task, "backend": "dmc", "image_size": base.image_size,
           "action_repeat": base.action_repeat, "envs_per_actor": args.envs,
           "encoder": "state", "seconds": args.seconds, "rounds": args.rounds,
           "env_sps": {f"{loop}_render_{'on' if rd else 'off'}": med[(loop, rd)]
                       for loop, rd in VARIANTS},
           "env_sps_rounds": {f"{loop}_render_{'on' if rd else 'off'}": v
                              for (loop, rd), v in sps.items()},
           "speedup_full": med[("full", False)] / med[("full", True)],
           "speedup_bare": med[("bare", False)] / med[("bare", True)],
           "full_time_fractions": {("render_on" if rd else "render_off"):
                                   {k: statistics.median(s[k] for s in splits[rd])
                                    for k in ("render_s", "policy_s", "send_s")}
                                   for rd in (True, False)},
           "load_avg_1min_rounds": loads, "note": args.note}
    print(f"renderer: {renderer}; {args.task} dmc, {args.envs} envs, action repeat "
          f"{base.action_repeat}; env steps/s, median of {args.rounds} rounds")
    print(f"{'loop':>5} {'render on':>10} {'render off':>11} {'off/on':>7}")
    for loop in ("bare", "full"):
        on, off = med[(loop, True)], med[(loop, False)]
        print(f"{loop:>5} {on:>10.0f} {off:>11.0f} {off / on:>7.1f}")
    print("full-loop time fractions (env step / policy / send): "
          + "; ".join(f"{k}: " + "/".join(f"{v:.2f}" for v in f.values())
                      for k, f in row["full_time_fractions"].items()))
    if args.no_save:
        return
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "a") as fh:
        fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
