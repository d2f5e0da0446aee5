"""`fpac-scaling`: wall-clock scaling of the whole service with the number of actor processes.

    fpac-scaling --task cartpole_swingup --actors 1,2,4,8,16,32 --seconds 60 --warmup 20 \
        --replay-ratio 0 --gpus 0 --out bench/results --name scaling-cartpole-cpu

For each actor count N a fresh learner (LearnerService) and a Supervisor of N actors run in two
child processes. After the warm-up (W seconds, and the learner's initial random phase over unless
it outlasts W + RANDOM_PHASE_GRACE_S) a window of S seconds is measured from the learner's own
metrics rows (metrics.jsonl, written every ROW_EVERY_S): env steps/s, updates/s, policy lag,
replay-ratio adherence and the actors' render/policy/send time fractions (their `stats` messages,
averaged by the learner into the `actor_*` fields); CPU and resident memory per process come from
/proc/<pid>/stat and /proc/<pid>/status.

Replay ratio: at the default ratio the learner admits steps only as fast as it trains (backpressure,
docs/INTERFACES.md), so on a slow (CPU) learner the figure is the learner's speed, not the actors'.
`--replay-ratio 0` measures actor + transport throughput: the learner never throttles and never
trains (the trainer's ratio 0).
`--to-return R` records return vs wall-clock per N until `--return-key` reaches R or `--time-cap`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from fpac_async.cli_parser import FpacParser
from typing import Any, Sequence

from fpac_async.cli_args import add_config_args, config_from_args
from fpac_async.config import RunConfig, resolve
from fpac_async.wire.transport import free_port_pair
from studies import scaling_report as report

log = logging.getLogger("fpac-scaling")

ROW_EVERY_S = 1.0  # learner metrics rows during a study
RANDOM_PHASE_GRACE_S = 120.0
START_TIMEOUT_S = 120.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- /proc
def proc_cpu_rss(pid: int) -> tuple[float, float] | None:
    """(CPU seconds user+system, resident MB) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the comm field may contain spaces
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime: fields 14 and 15
    rss_kb = next((int(line.split()[1]) for line in status.splitlines()
                   if line.startswith("VmRSS:")), 0)
    return cpu, rss_kb / 1024.0


def actor_pids(supervisor_pid: int) -> list[int]:
    """The supervisor's spawned children (not multiprocessing's resource tracker)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != supervisor_pid:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    pids.append(int(name))
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
    return sorted(pids)


def _sample(pids: list[int]) -> dict[int, tuple[float, float]]:
    return {p: s for p in pids if (s := proc_cpu_rss(p)) is not None}


def _cpu_rate(a: dict[int, tuple[float, float]], b: dict[int, tuple[float, float]],
              dt: float) -> list[float]:
    """Cores used by each process present in both samples."""
    return [(b[p][0] - a[p][0]) / dt for p in a if p in b]


# ---------------------------------------------------------------------------- children
def _learner_child(cfg: RunConfig) -> None:
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.setLevel(logging.INFO)  # the full log goes to the file, warnings also to the console
    for h in (console, logging.FileHandler(os.path.join(cfg.run_dir, "learner.log"))):
        h.setFormatter(logging.Formatter("%(asctime)s learner %(levelname)s %(message)s"))
        root.addHandler(h)
    from learner.service import LearnerService  # noqa: PLC0415 (heavy imports in the child only)
    sys.exit(LearnerService(cfg, tensorboard=False, console=False).run())


def _actors_child(n: int, cfg: RunConfig, endpoint: str) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    from actors.supervisor import Supervisor  # noqa: PLC0415
    evaluators = int(cfg.learner.eval_every_env_steps > 0 and cfg.learner.eval_episodes > 0)
    sys.exit(Supervisor(n, cfg.env, endpoint, seed=cfg.seed, stats_every_s=3600.0,
                        frame_stack=cfg.agent.frame_stack, encoder=cfg.agent.encoder,
                        evaluators=evaluators, eval_episodes=cfg.learner.eval_episodes).run())


class _Rows:
    """Tails a learner's metrics.jsonl."""

    def __init__(self, path: str) -> None:
        self.path, self.rows, self._pos = path, [], 0

    def poll(self) -> list[dict[str, Any]]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            f.seek(self._pos)
            new = []
            for line in f:
                if not line.endswith("\n"):
                    break  # a row being written: read it next time
                self._pos += len(line.encode())
                new.append(json.loads(line))
        self.rows += new
        return new


def _stop(proc: Any, timeout_s: float) -> None:
    if proc.is_alive():
        os.kill(proc.pid, signal.SIGTERM)
        proc.join(timeout_s)
    if proc.is_alive():
        proc.kill()
        proc.join()


# ---------------------------------------------------------------------------- one actor count
def run_one(cfg: RunConfig, n: int, warmup_s: float, seconds: float,
            to_return: float | None = None, return_key: str = "eval_return",
            time_cap_s: float = 3600.0) -> dict[str, Any]:
    """Run learner + n actors; a scaling row, plus `curve` (list of dicts) with to_return."""
    run_dir = os.path.join(cfg.run_dir, f"actors-{n}")
    os.makedirs(run_dir, exist_ok=True)
    port = free_port_pair()
    cfg = dataclasses.replace(cfg, run_dir=run_dir, learner=dataclasses.replace(
        cfg.learner, bind=f"tcp://127.0.0.1:{port}", log_every_s=ROW_EVERY_S))
    ctx = mp.get_context("spawn")
    learner = ctx.Process(target=_learner_child, args=(cfg,), name="fpac-scaling-learner")
    actors = ctx.Process(target=_actors_child, args=(n, cfg, f"127.0.0.1:{port}"),
                         name="fpac-scaling-actors")
    rows = _Rows(os.path.join(run_dir, "metrics.jsonl"))
    t_start = time.time()
    learner.start()
    actors.start()
    try:
        if to_return is not None:
            return _to_return(cfg, n, learner, actors, rows, t_start, to_return, return_key,
                              time_cap_s)
        return _window(cfg, n, learner, actors, rows, t_start, warmup_s, seconds)
    finally:
        _stop(actors, 10.0)
        _stop(learner, 60.0)


def _check_alive(learner: Any, actors: Any, run_dir: str) -> None:
    for p in (learner, actors):
        if not p.is_alive():
            raise RuntimeError(f"{p.name} exited with code {p.exitcode} during the study; see "
                               f"{run_dir}/learner.log")


def _window(cfg: RunConfig, n: int, learner: Any, actors: Any, rows: _Rows, t_start: float,
            warmup_s: float, seconds: float) -> dict[str, Any]:
    initial = cfg.replay.initial_random_steps
    r0 = r1 = None
    s0: dict = {}
    m0 = 0.0
    while r1 is None:
        time.sleep(0.1)
        _check_alive(learner, actors, cfg.run_dir)
        for row in rows.poll():
            age = row["time"] - t_start
            if r0 is None and age >= warmup_s and (
                    row["agent_steps"] >= initial or age >= warmup_s + RANDOM_PHASE_GRACE_S):
                r0, m0 = row, time.monotonic()
                s0 = _sample([learner.pid, actors.pid, *actor_pids(actors.pid)])
            elif r0 is not None and row["time"] - r0["time"] >= seconds:
                r1 = row
        if r0 is None and time.time() - t_start > warmup_s + RANDOM_PHASE_GRACE_S + START_TIMEOUT_S:
            raise RuntimeError(f"no metrics row after the warm-up; see {cfg.run_dir}/learner.log")
    dt_cpu = time.monotonic() - m0
    apids = actor_pids(actors.pid)
    s1 = _sample([learner.pid, actors.pid, *apids])
    inside = [r for r in rows.rows if r0["time"] <= r["time"] <= r1["time"]]
    dt = r1["time"] - r0["time"]
    d = {k: r1[k] - r0[k] for k in ("env_steps", "agent_steps", "updates")}
    ratio = cfg.replay.replay_ratio
    acpu = _cpu_rate({p: s0[p] for p in apids if p in s0}, s1, dt_cpu)
    return {
        "actors": n, "window_s": dt, "env_sps": d["env_steps"] / dt,
        "agent_sps": d["agent_steps"] / dt, "updates_per_s": d["updates"] / dt,
        "policy_lag": _mean(r.get("policy_lag") for r in inside),
        # Not meaningful at ratio 0 (no updates by design).
        "ratio_adherence": (d["updates"] / (ratio * d["agent_steps"])
                            if ratio > 0 and d["agent_steps"] > 0 else None),
        "random_phase_in_window": r0["agent_steps"] < initial,
        "actor_env_sps_mean": _mean(r.get("actor_env_sps") for r in inside),
        "render_frac": _mean(r.get("actor_render_frac") for r in inside),
        "policy_frac": _mean(r.get("actor_policy_frac") for r in inside),
        "send_frac": _mean(r.get("actor_send_frac") for r in inside),
        "send_blocked_frac": _mean(r["actor_send_blocked_s"] / r["actor_wall_s"] for r in inside
                                   if r.get("actor_send_blocked_s") is not None
                                   and r.get("actor_wall_s")),
        "learner_cpu": _first(_cpu_rate({learner.pid: s0[learner.pid]}, s1, dt_cpu)),
        "learner_rss_mb": s1.get(learner.pid, (0, None))[1],
        "supervisor_cpu": _first(_cpu_rate({actors.pid: s0[actors.pid]}, s1, dt_cpu)),
        "actors_cpu_total": sum(acpu) if acpu else None,
        "actor_cpu_mean": _mean(acpu),
        "actor_rss_mb_mean": _mean(s1[p][1] for p in apids if p in s1),
        "loadavg_1m": os.getloadavg()[0],
    }


def _to_return(cfg: RunConfig, n: int, learner: Any, actors: Any, rows: _Rows, t_start: float,
               target: float, key: str, cap_s: float) -> dict[str, Any]:
    curve: list[dict[str, Any]] = []
    reached = None
    while reached is None and time.time() - t_start < cap_s:
        time.sleep(0.2)
        _check_alive(learner, actors, cfg.run_dir)
        for row in rows.poll():
            pt = {"actors": n, "wall_s": row["time"] - t_start, "env_sps": row.get("sps"),
                  **{k: row.get(k) for k in report.CURVE_COLUMNS[3:]}}
            curve.append(pt)
            if reached is None and pt.get(key) is not None and pt[key] >= target:
                reached = pt["wall_s"]
    last = curve[-1] if curve else {}
    return {"actors": n, "curve": curve, "time_to_return_s": reached,
            "env_steps": last.get("env_steps"), "wall_s": last.get("wall_s")}


def _mean(xs: Any) -> float | None:
    vals = [float(x) for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def _first(xs: list[float]) -> float | None:
    return xs[0] if xs else None


# ---------------------------------------------------------------------------- the study
def build_parser() -> argparse.ArgumentParser:
    p = FpacParser(prog="fpac-scaling", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--actors", default="1,2,4,8,16,32", help="comma-separated actor counts")
    p.add_argument("--seconds", type=float, default=60.0, help="measured window per count")
    p.add_argument("--warmup", type=float, default=20.0, help="seconds before the window")
    p.add_argument("--out", default="bench/results", help="directory for CSV, Markdown, PNG")
    p.add_argument("--name", default="", help="output file stem (default scaling-TASK-DEVICE)")
    p.add_argument("--to-return", type=float, default=None,
                   help="time-to-score mode: run each count until --return-key reaches this")
    p.add_argument("--return-key", default="eval_return", choices=["eval_return", "train_return"])
    p.add_argument("--time-cap", type=float, default=3600.0, help="seconds per count (--to-return)")
    p.add_argument("--note", default="", help="conditions to record (e.g. other jobs running)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    import torch  # noqa: PLC0415 - only to pick the default device
    defaults = RunConfig()
    defaults.learner.gpus = 1 if torch.cuda.is_available() else 0
    defaults.run_dir = "runs/scaling"  # each study writes its learners under RUN_DIR/NAME-DATE/
    defaults.learner.eval_every_env_steps = 0  # evaluations would steal actor time
    add_config_args(p, defaults)
    return p


def run_study(args: argparse.Namespace, cfg: RunConfig) -> dict[str, str]:
    """Run every actor count and write the outputs; returns {kind: path}."""
    counts = [int(x) for x in args.actors.split(",") if x.strip()]
    ratio = cfg.replay.replay_ratio
    if ratio < 0:
        raise SystemExit("--replay-ratio must be >= 0")
    device = "gpu" if cfg.learner.gpus > 0 else "cpu"
    name = args.name or f"scaling-{cfg.env.task}-{device}"
    # A fresh directory per study: a learner refuses a run directory that holds checkpoints.
    run_dir = os.path.join(cfg.run_dir, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    cfg = resolve(dataclasses.replace(cfg, run_dir=run_dir))
    info = report.machine_info()
    common = {"task": cfg.env.task, "backend": cfg.env.backend,
              "envs_per_actor": cfg.env.envs_per_actor, "replay_ratio": ratio,
              "initial_random_steps": cfg.replay.initial_random_steps,
              "warmup_s": args.warmup, "learner_device": device, **info}
    results = []
    for n in counts:
        log.info("%d actor(s): starting", n)
        row = {**common, **run_one(cfg, n, args.warmup, args.seconds, args.to_return,
                                   args.return_key, args.time_cap)}
        log.info("%d actor(s): %s", n, {k: v for k, v in row.items() if k in (
            "env_sps", "updates_per_s", "time_to_return_s", "policy_lag")})
        results.append(row)
    os.makedirs(args.out, exist_ok=True)
    notes = [args.note] if args.note else []
    if ratio == 0:
        notes.append("Replay ratio 0: the learner does not throttle the actors (actor + "
                     "transport throughput, not training speed).")
    base = os.path.join(args.out, name)
    if args.to_return is not None:
        return report.write_return_outputs(base, results, args.return_key, args.to_return,
                                           args.time_cap, name)
    return report.write_scaling_outputs(base, results, f"Scaling: {cfg.env.task} ({device} "
                                        f"learner)", f"{cfg.env.task}, replay ratio {ratio}",
                                        notes)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s: %(message)s")
    out = run_study(args, config_from_args(args))
    for kind, path in out.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
