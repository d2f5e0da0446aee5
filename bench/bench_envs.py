"""Frames/s of the env backends: agent steps/s (one render each), single process, one thread.

cartpole_swingup at 84x84, bare env loop with uniform random actions, per backend and render
setting. Appends one JSON line per configuration to bench/results/envs.jsonl and prints a table.
Usage: .venv/bin/python bench/bench_envs.py [--steps 200] [--note "..."]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench.provenance import provenance  # noqa: E402
os.environ.setdefault("OMP_NUM_THREADS", "1")

from fpac_async.config import EnvConfig, RunConfig, resolve  # noqa: E402
from actors.envs import make_vec_env  # noqa: E402
from actors.envs.render_probe import RenderingError, probe_rendering  # noqa: E402

SETTINGS = [("dmc", "benchmark"), ("dmc", "fast"), ("envpool", "benchmark"), ("numpy", "benchmark")]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.node()} {cpu} x{os.cpu_count()}"


def commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def frames_per_second(backend: str, quality: str, steps: int) -> float:
    task = "point_reach" if backend == "numpy" else "cartpole_swingup"
    size = 32 if backend == "numpy" else 84
    cfg = resolve(RunConfig(env=EnvConfig(task=task, backend=backend, image_size=size))).env
    env = make_vec_env(cfg, seed=0, num_envs=1, render_quality=quality)
    rng = np.random.default_rng(0)
    env.reset()
    for _ in range(5):  # warm-up: GL context creation, first-frame costs
        env.step(rng.uniform(-1, 1, (1, env.action_dim)).astype(np.float32))
    acts = rng.uniform(-1, 1, (steps, 1, env.action_dim)).astype(np.float32)
    start = time.perf_counter()
    for a in acts:
        env.step(a)
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    try:
        renderer = probe_rendering("dmc", "cartpole_swingup")
    except RenderingError as e:
        renderer = f"unavailable: {e}"
    rows = []
    for backend, quality in SETTINGS:
        try:
            fps = frames_per_second(backend, quality, args.steps)
        except RenderingError as e:
            print(f"skip {backend}/{quality}: {e}")
            continue
        rows.append({"bench": "envs", "machine": machine(), "renderer": renderer,
                     "commit": commit(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
                     **provenance(),  # commit, machine, versions (override the short forms above)
                     "backend": backend, "setting": quality,
                     "task": "point_reach 32px" if backend == "numpy" else "cartpole_swingup 84px",
                     "steps": args.steps, "load_avg_1min": round(os.getloadavg()[0], 2),
                     "frames_per_s": round(fps, 1), "note": args.note})
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "envs.jsonl"), "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"renderer: {renderer}")
    print(f"{'backend':<9} {'setting':<10} {'task':<22} {'frames/s':>9}")
    for r in rows:
        print(f"{r['backend']:<9} {r['setting']:<10} {r['task']:<22} {r['frames_per_s']:>9.1f}")


if __name__ == "__main__":
    main()
