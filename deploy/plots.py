"""Learning-curve plots from a run directory's metrics.jsonl: return vs env steps and vs wall-clock."""
from __future__ import annotations

import json
import os
from typing import Iterable


def read_metrics(path: str) -> list[dict]:
    """Rows of a metrics.jsonl; a torn last line (a run killed mid-write) is skipped."""
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _series(rows: Iterable[dict], x: str, y: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        if r.get(y) is not None and r.get(x) is not None:
            xs.append(float(r[x]))
            ys.append(float(r[y]))
    return xs, ys


def run_title(run_dir: str) -> str:
    """'point_reach, fpac encoder, seed 0' from run_dir/config.json (issue 20: the title was the
    run folder's name, often just 'run'); the folder's name without a config."""
    try:
        with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        return f"{cfg['env']['task']}, {cfg['agent']['encoder']} encoder, seed {cfg['seed']}"
    except (OSError, ValueError, KeyError, TypeError):
        return os.path.basename(os.path.abspath(run_dir))


def plot_learning_curve(run_dir: str, out_name: str = "learning_curve.png") -> str | None:
    """Write <run_dir>/learning_curve.png (two panels); None when there is nothing to plot yet."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    rows = read_metrics(path)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = rows[0].get("time", 0.0)
    for r in rows:
        r["minutes"] = (r.get("time", t0) - t0) / 60.0
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, x, label in ((axes[0], "env_steps", "environment steps"),
                         (axes[1], "minutes", "wall-clock minutes")):
        xs, ys = _series(rows, x, "train_return")
        if xs:
            ax.plot(xs, ys, "-", label="train return")
        # eval_return is carried forward on every row; an evaluation's own row has eval_env_steps.
        evals = [dict(r, env_steps=r["eval_env_steps"]) for r in rows
                 if r.get("eval_env_steps") is not None]
        xs, ys = _series(evals, x, "eval_return")
        if xs:
            ax.plot(xs, ys, "o-", label="eval return (deterministic)", markersize=4)
        ax.set_xlabel(label)
        ax.set_ylabel("episode return")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(run_title(run_dir))
    fig.tight_layout()
    out = os.path.join(run_dir, out_name)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
