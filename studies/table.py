"""Our scores at fixed env steps (mean +- std across seeds) beside the published ones, as a
Markdown table (table.md) and as exact numbers (scores.json).

The columns follow the grid's own budget (issue 20; `default_columns`): the paper's 100k and 500k
where the budget reaches them, plus the budget itself (where every finished run has its final
evaluation); a grid smaller than 100k gets its budget only (the tiny grid showed only n/a at
100k/500k)."""
from __future__ import annotations

import json
import os
from typing import Sequence

from studies.curves import Curve, across_seeds
from studies.references import Reference


def steps_label(x: float) -> str:
    """100000 -> '100k', 1500000 -> '1.5M', 312 -> '312'."""
    if x >= 1e6:
        return f"{x / 1e6:g}M"
    return f"{x / 1e3:g}k" if x >= 1e3 else f"{x:g}"


PAPER_STEPS = (100_000, 500_000)


def default_columns(budget: int | None) -> list[int]:
    """The table's env steps for a grid whose runs end at `budget` (None: the paper's)."""
    if budget is None:
        return list(PAPER_STEPS)
    paper = [x for x in PAPER_STEPS if x <= budget]
    return paper + ([budget] if budget not in paper else [])


def our_scores(curves: dict[tuple[str, str], list[Curve]], at: Sequence[int]) -> list[dict]:
    """One row per (task, agent): at each env-step count, mean/std/n over the seeds that reach it
    (None where none does)."""
    rows = []
    for (task, agent), runs in curves.items():
        row: dict = {"task": task, "agent": agent, "seeds": len(runs), "at": {}}
        for x in at:
            p = across_seeds(runs, x)
            row["at"][str(x)] = None if p is None else {"mean": p.mean, "std": p.std, "n": p.n}
        rows.append(row)
    return rows


def _ours(cell: dict | None, seeds: int) -> str:
    if cell is None:
        return "n/a"
    text = f"{cell['mean']:.1f} ± {cell['std']:.1f}"
    return text if cell["n"] == seeds else f"{text} ({cell['n']} of {seeds} seeds)"


def markdown_table(rows: Sequence[dict], at: Sequence[int], refs: Sequence[Reference]) -> str:
    """Per task: our agents (mean ± std over seeds, 'n/a' where no run got that far), then every
    reference with a score for that task, and the citations below the table."""
    head = ["task", "agent"] + [f"{steps_label(x)} env steps" for x in at]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    cited: list[Reference] = []
    for task in dict.fromkeys(r["task"] for r in rows):
        for r in (r for r in rows if r["task"] == task):
            seeds = f"{r['seeds']} seed{'s' if r['seeds'] != 1 else ''}"
            cells = [_ours(r["at"][str(x)], r["seeds"]) for x in at]
            lines.append(f"| {task} | {r['agent']} (ours, {seeds}) | " + " | ".join(cells) + " |")
        for ref in refs:
            pairs = [ref.at(task, x) for x in at]
            if all(p is None for p in pairs):
                continue
            if ref not in cited:
                cited.append(ref)
            cells = ["-" if p is None else f"{p[0]:g} ± {p[1]:g}" for p in pairs]
            lines.append(f"| {task} | {ref.method} [{cited.index(ref) + 1}] | "
                         + " | ".join(cells) + " |")
    notes = ["", "Ours: mean ± population std across seeds of the deterministic evaluation return, "
                 "linearly interpolated between evaluations at the given env steps."]
    notes += [f"[{i + 1}] {ref.method}: {ref.source}" for i, ref in enumerate(cited)]
    return "\n".join(lines + notes) + "\n"


def write_table(out_dir: str, curves: dict[tuple[str, str], list[Curve]], at: Sequence[int],
                refs: Sequence[Reference]) -> tuple[str, str]:
    """Write out_dir/table.md and out_dir/scores.json; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    rows = our_scores(curves, at)
    md, js = os.path.join(out_dir, "table.md"), os.path.join(out_dir, "scores.json")
    with open(md, "w", encoding="utf-8") as f:
        f.write(markdown_table(rows, at, refs))
    with open(js, "w", encoding="utf-8") as f:
        json.dump({"at": list(at), "rows": rows}, f, indent=2)
        f.write("\n")
    return md, js
