"""Soak: a real learner and fpac-actors run for --minutes; every --sample-s the resident memory
(VmRSS of /proc/PID/status) and open file descriptors (/proc/PID/fd) of the learner, the
supervisor and every actor / evaluator process are sampled. Flat is the target.

    python bench/bench_soak.py --minutes 30 --actors 3 --machine-shared

Writes one row per sample and a summary row (least-squares RSS slope per process in MB/min, over
the whole run and after --warmup-min, and the fd range) to bench/results/soak.jsonl, each with
bench/provenance.py's fields, and a plot to bench/results/soak.png. Processes are named from the
supervisor's log ("actor 2: started pid N"), so a restarted actor shows up as a new pid.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.provenance import ROOT, provenance  # noqa: E402
from fpac_async.wire.transport import free_port_pair  # noqa: E402

STARTED = re.compile(r"(actor|evaluator) (\d+): started pid (\d+)")


def proc_sample(pid: int) -> dict | None:
    """RSS (MB) and open fds of a live process; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, StopIteration, PermissionError):
        return None
    return {"pid": pid, "rss_mb": round(rss_kb / 1024, 2), "fds": fds}


def actor_pids(log_path: str) -> dict[str, int]:
    """Role+id -> the newest pid the supervisor started for it."""
    pids: dict[str, int] = {}
    with open(log_path, errors="replace") as f:
        for m in STARTED.finditer(f.read()):
            pids[f"{m.group(1)}{m.group(2)}"] = int(m.group(3))
    return pids


def last_metrics(run_dir: str) -> dict:
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            lines = [ln for ln in f if ln.endswith("\n")]
        row = json.loads(lines[-1]) if lines else {}
    except (FileNotFoundError, json.JSONDecodeError):
        row = {}
    keys = ("env_steps", "updates", "replay_size", "actors", "stream_restarts",
            "stream_records_missing", "rejected_messages")
    return {k: row.get(k) for k in keys}


def slope(ts: list[float], ys: list[float]) -> float | None:
    """Least-squares slope dy/dt (per minute when ts are minutes)."""
    if len(ts) < 2:
        return None
    mt, my = sum(ts) / len(ts), sum(ys) / len(ys)
    var = sum((t - mt) ** 2 for t in ts)
    return None if var == 0 else sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var


def summarize(samples: list[dict], warmup_min: float) -> dict:
    series: dict[str, list[tuple[float, float, int]]] = {}
    for s in samples:
        for name, p in s["procs"].items():
            series.setdefault(name, []).append((s["t_min"], p["rss_mb"], p["fds"]))
    out = {}
    for name, pts in sorted(series.items()):
        late = [p for p in pts if p[0] >= warmup_min]
        out[name] = {
            "samples": len(pts), "rss_first_mb": pts[0][1], "rss_last_mb": pts[-1][1],
            "rss_max_mb": max(p[1] for p in pts),
            "rss_slope_mb_per_min": slope([p[0] for p in pts], [p[1] for p in pts]),
            "rss_slope_after_warmup_mb_per_min": slope([p[0] for p in late], [p[1] for p in late]),
            "fds_min": min(p[2] for p in pts), "fds_max": max(p[2] for p in pts),
            "fds_last": pts[-1][2]}
    return out


def plot(samples: list[dict], path: str, title: str) -> None:
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    names = sorted({n for s in samples for n in s["procs"]})
    fig, (ax_rss, ax_fd) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for name in names:
        pts = [(s["t_min"], s["procs"][name]) for s in samples if name in s["procs"]]
        ax_rss.plot([t for t, _ in pts], [p["rss_mb"] for _, p in pts], marker=".", label=name)
        ax_fd.plot([t for t, _ in pts], [p["fds"] for _, p in pts], marker=".", label=name)
    ax_rss.set_ylabel("RSS (MB)")
    ax_fd.set_ylabel("open fds")
    ax_fd.set_xlabel("minutes")
    ax_rss.set_title(title, fontsize=9)
    ax_rss.legend(fontsize=7, ncol=3)
    for ax in (ax_rss, ax_fd):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--sample-s", type=float, default=60.0)
    ap.add_argument("--warmup-min", type=float, default=5.0,
                    help="slopes are also given from this minute on (replay filled)")
    ap.add_argument("--actors", type=int, default=3)
    ap.add_argument("--task", default="point_reach")
    ap.add_argument("--learner-args", default="--capacity 4000 --num-points 4 --conv-channels 8 "
                    "--hidden-dim 32 --batch-size 16 --replay-ratio 0.25 --checkpoint-every 500 "
                    "--eval-every-env-steps 5000 --eval-episodes 5",
                    help="extra flags of fpac-learner: a small replay that fills within minutes "
                         "and small networks, so that many messages flow on a CPU learner")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "soak.jsonl"))
    ap.add_argument("--plot", default=os.path.join(ROOT, "bench", "results", "soak.png"))
    ap.add_argument("--machine-shared", action="store_true",
                    help="mark the rows: other jobs ran on this machine meanwhile")
    args = ap.parse_args(argv)

    run_dir = tempfile.mkdtemp(prefix="fpac-soak-")
    port = free_port_pair()
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.setdefault("MUJOCO_GL", "egl")
    common = ["--task", args.task, "--seed", "0"]
    learner_cmd = [sys.executable, "-m", "learner.cli", *common, "--gpus", "0",
                   "--bind", f"tcp://127.0.0.1:{port}", "--run-dir", run_dir,
                   "--env-steps", str(10**10), "--log-every-s", "10", *args.learner_args.split()]
    actors_cmd = [sys.executable, "-m", "actors.cli", *common, "--n", str(args.actors),
                  "--evaluator", "--learner", f"127.0.0.1:{port}", "--stats-every-s", "300"]
    settings = {"minutes": args.minutes, "sample_s": args.sample_s, "actors": args.actors,
                "evaluators": 1, "task": args.task, "learner_args": args.learner_args,
                "device": "cpu", "machine_shared": bool(args.machine_shared)}
    prov = provenance()
    actors_log = os.path.join(run_dir, "actors.log")
    with open(os.path.join(run_dir, "learner.out"), "w") as lout, open(actors_log, "w") as aout:
        learner = subprocess.Popen(learner_cmd, cwd=ROOT, env=env, stdout=lout, stderr=lout)
        actors = subprocess.Popen(actors_cmd, cwd=ROOT, env=env, stdout=aout, stderr=aout)
    print(f"soak: run dir {run_dir}, learner pid {learner.pid}, supervisor pid {actors.pid}",
          flush=True)
    samples: list[dict] = []
    start = time.monotonic()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    try:
        while True:
            # The first sample one interval in: start-up (imports, first allocations) is not a leak.
            time.sleep(max(0.0, start + (len(samples) + 1) * args.sample_s - time.monotonic()))
            t_min = (time.monotonic() - start) / 60
            for name, p in (("learner", learner), ("supervisor", actors)):
                if p.poll() is not None:
                    raise RuntimeError(f"the {name} exited with code {p.returncode}; see "
                                       f"{run_dir}")
            procs = {"learner": proc_sample(learner.pid), "supervisor": proc_sample(actors.pid)}
            for name, pid in actor_pids(actors_log).items():
                procs[name] = proc_sample(pid)
            procs = {k: v for k, v in procs.items() if v is not None}
            sample = {"bench": "soak", "kind": "sample", "t_min": round(t_min, 3),
                      "procs": procs, "learner_metrics": last_metrics(run_dir)}
            samples.append(sample)
            with open(args.out, "a") as f:
                f.write(json.dumps({**sample, "settings": settings, **prov}) + "\n")
            print(f"{t_min:6.1f} min " + " ".join(
                f"{k}={v['rss_mb']:.0f}MB/{v['fds']}fd" for k, v in procs.items())
                + f" {sample['learner_metrics']}", flush=True)
            if t_min >= args.minutes - 1e-6:
                break
    finally:
        actors.send_signal(signal.SIGINT)
        learner.send_signal(signal.SIGTERM)
        for p in (actors, learner):
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    summary = summarize(samples, args.warmup_min)
    row = {"bench": "soak", "kind": "summary", "minutes": samples[-1]["t_min"],
           "warmup_min": args.warmup_min, "procs": summary,
           "learner_metrics": samples[-1]["learner_metrics"], "run_dir": run_dir,
           "settings": settings, **prov}
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")
    plot(samples, args.plot, f"soak {args.task}: {args.actors} actors + 1 evaluator, "
         f"commit {prov['commit']}, {prov['machine']['cores']} cores"
         + (" (shared machine)" if args.machine_shared else ""))
    for name, s in summary.items():
        print(f"{name:>12}: RSS {s['rss_first_mb']:.0f} -> {s['rss_last_mb']:.0f} MB, slope "
              f"{s['rss_slope_mb_per_min']} MB/min (after warm-up "
              f"{s['rss_slope_after_warmup_mb_per_min']}), fds {s['fds_min']}..{s['fds_max']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
