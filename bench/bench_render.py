"""Actor rendering speed: frames/s per process and over N processes at once, per EGL driver.

For each renderer ('nvidia': the NVIDIA driver's EGL on the GPU; 'mesa': Mesa's EGL, llvmpipe on
a machine without a GPU render node) and each process count N, N worker processes step the bare
DMC env loop of an actor (bench_actor.bare_fps: physics at the task's action repeat, one render
per agent step, one env per process) for --seconds and report frames/s and the GL_RENDERER they
got. A row per (renderer, N): per-process mean/min/max, total frames/s, the renderer strings.
A renderer that is not installed, or workers that fail, give a row with the error.

    python bench/bench_render.py                                  # nvidia and mesa, N = 1 and 15
    python bench/bench_render.py --renderers mesa --processes 1,2 --seconds 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from actors.envs.egl_vendor import vendor_env  # noqa: E402
from bench.provenance import provenance  # noqa: E402

_TAG = "FPAC_RENDER_BENCH:"


def worker(task: str, image_size: int, seconds: float, seed: int) -> None:
    """In a child process: the GL renderer and the bare loop's frames/s, as one tagged line."""
    import dataclasses  # noqa: PLC0415

    from actors.envs.render_probe import _gl_renderer  # noqa: PLC0415
    from bench.bench_actor import bare_fps  # noqa: PLC0415
    from fpac_async.config import EnvConfig, RunConfig, resolve  # noqa: PLC0415
    env_cfg = resolve(RunConfig(env=EnvConfig(task=task, image_size=image_size))).env
    env_cfg = dataclasses.replace(env_cfg, envs_per_actor=1)
    fps = bare_fps(env_cfg, seconds, seed)
    print(_TAG + json.dumps({"fps": fps, "renderer": _gl_renderer()}), flush=True)


def run_group(renderer: str, n: int, args: argparse.Namespace) -> dict:
    """N workers at once with `renderer`'s EGL driver; their results or the error."""
    env = dict(os.environ, MUJOCO_GL="egl", PYOPENGL_PLATFORM="egl",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    try:
        env.update(vendor_env(renderer))
    except ValueError as e:
        return {"error": str(e)}
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--task", args.task,
           "--image-size", str(args.image_size), "--seconds", str(args.seconds)]
    procs = [subprocess.Popen(cmd + ["--seed", str(i)], env=env, cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(n)]
    results, errors = [], []
    deadline = time.monotonic() + args.seconds + args.startup_timeout_s
    for p in procs:
        try:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            errors.append("timed out")
            continue
        lines = [ln for ln in out.splitlines() if ln.startswith(_TAG)]
        if p.returncode == 0 and lines:
            results.append(json.loads(lines[-1][len(_TAG):]))
        else:
            tail = (err or out).strip().splitlines()
            errors.append(f"exit {p.returncode}: {tail[-1] if tail else ''}"[:300])
    if not results:
        return {"error": "; ".join(sorted(set(errors)))}
    fps = [r["fps"] for r in results]
    return {"processes_ok": len(results), "errors": sorted(set(errors)),
            "fps_per_process_mean": round(statistics.mean(fps), 2),
            "fps_per_process_min": round(min(fps), 2), "fps_per_process_max": round(max(fps), 2),
            "fps_total": round(sum(fps), 2),
            "renderers": sorted({r["renderer"] for r in results})}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--renderers", default="nvidia,mesa")
    p.add_argument("--processes", default="1,15", help="comma list of process counts")
    p.add_argument("--task", default="cartpole_swingup")
    p.add_argument("--image-size", type=int, default=84)
    p.add_argument("--seconds", type=float, default=5.0, help="timed seconds per worker")
    p.add_argument("--startup-timeout-s", type=float, default=60.0)
    p.add_argument("--machine-shared", action="store_true")
    p.add_argument("--note", default="")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "render.jsonl"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.task, args.image_size, args.seconds, args.seed)
        return
    base = {"bench": "render_fps", **provenance(), "task": args.task,
            "image_size": args.image_size, "seconds": args.seconds, "note": args.note,
            "settings": {"machine_shared": bool(args.machine_shared), "envs_per_process": 1,
                         "render_quality": "benchmark"}}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    print(f"{'renderer':<9}{'N':>4}{'fps/process [min, max]':>28}{'total fps':>11}  GL_RENDERER")
    for renderer in [r for r in args.renderers.split(",") if r]:
        for n in [int(x) for x in args.processes.split(",") if x]:
            res = run_group(renderer, n, args)
            row = {**base, "renderer": renderer, "processes": n, **res,
                   "load_avg_1m": os.getloadavg()[0]}
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            if "error" in res:
                print(f"{renderer:<9}{n:>4}  FAILED: {res['error']}", flush=True)
                continue
            print(f"{renderer:<9}{n:>4}{res['fps_per_process_mean']:>12.1f} "
                  f"[{res['fps_per_process_min']:.1f}, {res['fps_per_process_max']:.1f}]"
                  f"{res['fps_total']:>11.1f}  {'; '.join(res['renderers'])}", flush=True)


if __name__ == "__main__":
    main()
