"""The rows of bench/results/*.jsonl as the generated README tables read them: annotations
applied, full provenance checked, the newest quiet rows preferred, spreads and sources written
the same way for every figure (bench/readme_table.py, bench/readme_figures_service.py).
"""
from __future__ import annotations

import json
import os
import statistics
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
VERSIONS = ("torch", "mujoco", "dm_control", "envpool", "libzmq")
MISSING = "no row with full provenance yet: `bash bench/remeasure.sh`"

Row = dict[str, Any]
Figure = tuple[str, str, str]  # what, figure, source: one row of the generated table


# ---------------------------------------------------------------- rows
def load(name: str, results: str = RESULTS) -> list[Row]:
    """The rows of one results file, annotations applied (a missing file has no rows)."""
    path = os.path.join(results, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for note in _annotations(results):
        if note["file"] != name:
            continue
        for row in rows:
            if all(row.get(k) == v for k, v in note["match"].items()):
                row["machine_shared"] = note.get("machine_shared", row.get("machine_shared"))
                row["annotation"] = note.get("why", "")
    return rows


def _annotations(results: str) -> list[Row]:
    path = os.path.join(results, "annotations.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def complete(row: Row) -> bool:
    """Commit (clean), machine (CPU, cores, memory, GPU) and the versions that matter."""
    commit, machine, versions = row.get("commit"), row.get("machine"), row.get("versions")
    return (isinstance(commit, str) and commit not in ("", "unknown") and "dirty" not in commit
            and isinstance(machine, dict)
            and all(k in machine for k in ("cpu", "cores", "mem_gib", "gpu"))
            and isinstance(versions, dict) and all(k in versions for k in VERSIONS))


def shared(row: Row) -> bool:
    settings = row.get("settings") if isinstance(row.get("settings"), dict) else {}
    return bool(row.get("machine_shared") or settings.get("machine_shared"))


def newest(rows: list[Row], prefer_quiet: bool = True) -> list[Row]:
    """The rows of the newest commit among complete rows, quiet ones preferred (for speed
    figures; a learning outcome takes the newest code's rows, shared or not)."""
    rows = [r for r in rows if complete(r)]
    quiet = [r for r in rows if not shared(r)] if prefer_quiet else []
    pool = quiet or rows
    if not pool:
        return []
    commit = max(pool, key=lambda r: str(r["date"]))["commit"]
    return [r for r in pool if r["commit"] == commit]


def source(rows: list[Row], name: str) -> str:
    first = min(str(r["date"]) for r in rows)
    if any(shared(r) for r in rows):
        where = "machine shared"
    elif all(r.get("machine_shared") is False for r in rows):
        where = "quiet"
    else:  # no claim either way: the 1-minute load average when it started
        where = f"load {max(r.get('load_avg_1m') or 0 for r in rows):.1f}"
    return f"`{name}` {rows[0]['commit']}, {first[:16].replace('T', ' ')}, {where}"


def spread(xs: list[float], fmt: str = "{:.1f}") -> str:
    """Median, and the range when there are repeats."""
    med = fmt.format(statistics.median(xs))
    if len(xs) < 2:
        return med
    return f"{med} ({fmt.format(min(xs))}-{fmt.format(max(xs))}, {len(xs)} runs)"


def figure(name: str, what: str, fn: Callable[[list[Row]], str],
           keep: Callable[[Row], bool] = lambda r: True,
           prefer_quiet: bool = True) -> Callable[[str], list[Figure]]:
    """A one-row figure of the generated table: `fn` writes it from the newest rows of results
    file `name` (those `keep` accepts), `what` says what it is; without such rows it says
    MISSING. The returned function takes the results folder."""
    def one(results: str = RESULTS) -> list[Figure]:
        group = newest([r for r in load(name, results) if keep(r)], prefer_quiet)
        return [(what, fn(group), source(group, name))] if group else [(what, MISSING, "-")]
    one.__name__ = one.__qualname__ = f"the figure of {name}"  # block() names it on errors
    return one


def speed(rows: list[Row], text: str) -> str:
    return f"{text} (machine shared: not a clean speed figure)" if any(shared(r) for r in rows) \
        else text
