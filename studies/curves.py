"""Learning curves from runs' evals.jsonl, and their mean and std across seeds (pure functions).

A run's curve is (env steps of the evaluated policy, mean evaluation return) per evaluation
(learner/service.py writes one evals.jsonl line per evaluation). A resumed run continues from its
last checkpoint, so evaluations logged after that checkpoint by the stopped attempt are replaced:
when an evaluation's env steps are not past the previous line's, the earlier lines at or beyond
it are dropped (the curve is the latest timeline). A run's value at env steps x is the linear
interpolation between its evaluations around x (exact at an evaluation); none outside the range
it has evaluated. Across seeds: the mean and the population std (numpy's default, ddof=0) over
the runs that have a value at x.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Sequence

Curve = list[tuple[float, float]]  # (env_steps, mean_return), increasing env_steps


@dataclass(frozen=True)
class Point:
    x: float
    mean: float
    std: float
    n: int  # runs with a value at x


def curve_from_records(records: Sequence[dict]) -> Curve:
    """The latest timeline of evaluation records (in file order) as a curve."""
    curve: Curve = []
    for rec in records:
        x, y = rec.get("env_steps"), rec.get("mean_return")
        if x is None or y is None:
            continue
        x, y = float(x), float(y)
        if curve and x <= curve[-1][0]:  # a resumed run went back to its checkpoint
            curve = [p for p in curve if p[0] < x]
        curve.append((x, y))
    return curve


def read_curve(run_dir: str) -> Curve:
    """The curve of one run directory (empty if it has no evals.jsonl yet)."""
    path = os.path.join(run_dir, "evals.jsonl")
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line of a killed run
    return curve_from_records(records)


def value_at(curve: Curve, x: float) -> float | None:
    """The curve's value at x (linear between its evaluations); None outside its range."""
    if not curve or x < curve[0][0] or x > curve[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return curve[-1][1]  # a one-point curve at exactly x


def across_seeds(curves: Sequence[Curve], x: float) -> Point | None:
    """Mean and population std at x over the curves that reach x; None if none does."""
    ys = [y for y in (value_at(c, x) for c in curves) if y is not None]
    if not ys:
        return None
    mean = sum(ys) / len(ys)
    std = math.sqrt(sum((y - mean) ** 2 for y in ys) / len(ys))
    return Point(x, mean, std, len(ys))


def common_grid(curves: Sequence[Curve], step: float | None = None) -> list[float]:
    """Env steps at which every curve has a value: multiples of `step` in the range all curves
    share, plus its end; without a step, every evaluation point in that range."""
    curves = [c for c in curves if c]
    if not curves:
        return []
    lo = max(c[0][0] for c in curves)
    hi = min(c[-1][0] for c in curves)
    if hi < lo:
        return []
    if step:
        xs = [k * step for k in range(math.ceil(lo / step), math.floor(hi / step) + 1)]
    else:
        xs = sorted({x for c in curves for x, _ in c if lo <= x <= hi})
    if not xs or xs[0] > lo:
        xs.insert(0, lo)
    if xs[-1] < hi:
        xs.append(hi)
    return xs


def mean_curve(curves: Sequence[Curve], step: float | None = None) -> list[Point]:
    """Mean and std across seeds over the env steps all the seeds' curves reach."""
    points = (across_seeds(curves, x) for x in common_grid(curves, step))
    return [p for p in points if p is not None]
