"""Outputs of `fpac-scaling`: efficiency from measured throughputs, CSV, Markdown table, PNG plots.

Pure functions over lists of row dicts (one row per actor count), so they are testable without
running anything. Efficiency(N) = throughput(N) / (N / N0 * throughput(N0)), N0 the smallest actor
count measured (1 in a normal study), i.e. throughput(N) / (N * throughput(1)) when N0 = 1.
"""
from __future__ import annotations

import csv
import math
import os
import platform
import subprocess
import time
from typing import Any, Sequence

# Column order of the scaling CSV (and the keys measure_one() fills).
COLUMNS = (
    "task", "backend", "actors", "envs_per_actor", "replay_ratio",
    "initial_random_steps", "warmup_s", "window_s", "env_sps", "agent_sps", "updates_per_s",
    "speedup", "efficiency", "policy_lag", "ratio_adherence", "random_phase_in_window",
    "actor_env_sps_mean", "render_frac", "policy_frac", "send_frac", "send_blocked_frac",
    "learner_cpu", "learner_rss_mb", "actors_cpu_total", "actor_cpu_mean", "actor_rss_mb_mean",
    "supervisor_cpu", "learner_device", "machine", "cores", "loadavg_1m", "commit", "date",
)
# Columns of the time-to-score curve CSV (--to-return).
CURVE_COLUMNS = ("actors", "wall_s", "env_sps", "env_steps", "agent_steps", "updates",
                 "train_return", "eval_return")
# What the Markdown table shows (the CSV has everything).
MD_COLUMNS = (("actors", "actors", "d"), ("env_sps", "env steps/s", ".1f"),
              ("speedup", "speedup", ".2f"), ("efficiency", "efficiency", ".2f"),
              ("updates_per_s", "updates/s", ".2f"), ("policy_lag", "lag", ".1f"),
              ("ratio_adherence", "ratio adh.", ".2f"), ("render_frac", "render", ".2f"),
              ("policy_frac", "policy", ".2f"), ("send_frac", "send", ".2f"),
              ("learner_cpu", "learner CPU", ".2f"), ("learner_rss_mb", "learner MB", ".0f"),
              ("actor_cpu_mean", "CPU/actor", ".2f"), ("actor_rss_mb_mean", "MB/actor", ".0f"),
              ("loadavg_1m", "load 1m", ".1f"))


def add_efficiency(rows: list[dict[str, Any]], key: str = "env_sps") -> list[dict[str, Any]]:
    """Fill `speedup` = thr(N) / thr(N0) and `efficiency` = speedup * N0 / N in place (N0 = the
    smallest actor count with a positive throughput); None where they cannot be computed."""
    base = [r for r in rows if _num(r.get(key)) and r[key] > 0]
    if not base:
        for r in rows:
            r["speedup"] = r["efficiency"] = None
        return rows
    b = min(base, key=lambda r: r["actors"])
    for r in rows:
        thr = _num(r.get(key))
        if thr is None:
            r["speedup"] = r["efficiency"] = None
            continue
        r["speedup"] = thr / b[key]
        r["efficiency"] = r["speedup"] * b["actors"] / r["actors"]
    return rows


def write_csv(path: str, rows: Sequence[dict[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore", restval="")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r[k]) for k in columns})
    return path


def markdown_table(rows: Sequence[dict[str, Any]], title: str, notes: Sequence[str] = ()) -> str:
    """A Markdown section: title, the run's settings and machine, then one row per actor count."""
    lines = [f"## {title}", ""]
    if rows:
        r0 = rows[0]
        lines.append(f"task `{r0['task']}` ({r0['backend']}), {r0['envs_per_actor']} env(s) per "
                     f"actor, replay ratio {r0['replay_ratio']}, "
                     f"initial random steps {r0['initial_random_steps']}, warm-up "
                     f"{r0['warmup_s']:.0f} s, window {r0['window_s']:.0f} s, learner on "
                     f"{r0['learner_device']}.  ")
        lines.append(f"machine: {r0['machine']} ({r0['cores']} cores), commit {r0['commit']}, "
                     f"{r0['date']}.")
    lines += [f"{n}" for n in notes]
    lines += ["", "| " + " | ".join(h for _, h, _ in MD_COLUMNS) + " |",
              "|" + "---|" * len(MD_COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k), spec) for k, _, spec in MD_COLUMNS) + " |")
    lines += ["", "Columns: env steps/s and updates/s from the learner's counters over the window; "
              "efficiency = throughput(N) / (N x throughput(1)); lag = learner version - record "
              "version; ratio adh. = updates / (ratio x agent steps) over the window (n/a at "
              "ratio 0); render/policy/send = mean fraction of actor wall time (actor `stats`); "
              "CPU in cores (1.0 = one core busy), MB = resident memory.", ""]
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    """Machine, core count, git commit and date stamped into every output row."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), model)
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"machine": f"{platform.node()} {model}", "cores": os.cpu_count(), "commit": commit,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_scaling_outputs(base: str, rows: list[dict[str, Any]], title: str, plot_title: str,
                          notes: Sequence[str] = ()) -> dict[str, str]:
    """BASE.csv, BASE.md and BASE.png (when matplotlib is there) of a scaling study."""
    add_efficiency(rows)
    out = {"csv": write_csv(base + ".csv", rows)}
    with open(base + ".md", "w", encoding="utf-8") as f:
        f.write(markdown_table(rows, title, notes))
    out["md"] = base + ".md"
    if plot_scaling(base + ".png", rows, plot_title):
        out["png"] = base + ".png"
    return out


def write_return_outputs(base: str, results: list[dict[str, Any]], key: str, target: float,
                         cap_s: float, title: str) -> dict[str, str]:
    """BASE-return.{csv,md,png}: return vs wall-clock per actor count and the time to target."""
    curve = [p for r in results for p in r["curve"]]
    out = {"csv": write_csv(base + "-return.csv", curve, CURVE_COLUMNS)}
    r0 = results[0]
    lines = [f"## Time to {key} {target:g}: {r0['task']}", "",
             f"machine: {r0['machine']}, commit {r0['commit']}, {r0['date']}, cap {cap_s:.0f} s "
             f"per count.", "",
             "| actors | time to target (min) | env steps at stop | wall at stop (min) |",
             "|---|---|---|---|"]
    for r in results:
        t = r["time_to_return_s"]
        t = "not reached" if t is None else f"{t / 60:.1f} ({t:.0f} s)"
        lines.append(f"| {r['actors']} | {t} | {r['env_steps']} | {(r['wall_s'] or 0) / 60:.1f} |")
    with open(base + "-return.md", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    out["md"] = base + "-return.md"
    if plot_curves(base + "-return.png", {r["actors"]: r["curve"] for r in results}, key, target,
                   title):
        out["png"] = base + "-return.png"
    return out


def plot_scaling(path: str, rows: Sequence[dict[str, Any]], title: str) -> str | None:
    """Throughput vs actors with the ideal linear line, and efficiency vs actors (two panels).
    None (and nothing written) when matplotlib is not installed."""
    plt = _pyplot()
    if plt is None:
        return None
    pts = [r for r in rows if _num(r.get("env_sps")) is not None]
    ns = [r["actors"] for r in pts]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(ns, [r["env_sps"] for r in pts], "o-", label="measured")
    base = [r for r in pts if r.get("speedup")]
    if base:
        b = min(base, key=lambda r: r["actors"])
        ax1.plot(ns, [b["env_sps"] * n / b["actors"] for n in ns], "k--", label="ideal (linear)")
    ax1.set_xlabel("actors")
    ax1.set_ylabel("env steps / s")
    ax1.legend()
    ax2.plot(ns, [r.get("efficiency") or float("nan") for r in pts], "o-")
    ax2.axhline(1.0, color="k", ls="--", lw=1)
    ax2.axhline(0.85, color="r", ls=":", lw=1, label="target 0.85")
    ax2.set_ylim(0, 1.2)
    ax2.set_xlabel("actors")
    ax2.set_ylabel("efficiency = thr(N) / (N thr(1))")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_curves(path: str, curves: dict[int, list[dict[str, Any]]], key: str, target: float,
                title: str) -> str | None:
    """Return (`key`) vs wall-clock seconds, one line per actor count, with the target line."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for n, pts in sorted(curves.items()):
        xy = [(p["wall_s"], p[key]) for p in pts if _num(p.get(key)) is not None]
        if xy:
            ax.plot([x / 60 for x, _ in xy], [y for _, y in xy], "o-", ms=3, label=f"{n} actors")
    ax.axhline(target, color="k", ls="--", lw=1, label=f"target {target:g}")
    ax.set_xlabel("wall-clock minutes")
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _pyplot() -> Any:
    try:
        import matplotlib  # noqa: PLC0415 - optional dependency, only for the PNG
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    return plt


def _num(x: Any) -> float | None:
    if x is None or isinstance(x, (str, bool)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _fmt(x: Any, spec: str) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, str):
        return x
    return format(int(x) if spec == "d" else float(x), spec)
