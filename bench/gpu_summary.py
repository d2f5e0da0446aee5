"""The summary of a bench/gpu_suite.sh run: steps (exit code, seconds), the updates/s table with
the issue-13 targets checked, the rendering table and the cartpole learning result.

    python bench/gpu_summary.py OUT_DIR
"""
from __future__ import annotations

import json
import os
import sys

TARGET_UPS, TARGET_SPEEDUP = 1000.0, 3.0  # issue 13: on an H200 at batch 128


def rows(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def learner_table(out: str) -> list[str]:
    table = rows(os.path.join(out, "learner.jsonl"))
    if not table:
        return ["updates/s: no rows"]
    lines = [f"updates/s on {table[0]['device_name']} (batch {table[0]['batch_size']}, "
             f"{table[0]['image_size']}px, K={table[0]['num_points']}, "
             f"hidden {table[0]['hidden_dim']}):",
             f"  {'variant':<20}{'median':>10}{'min':>10}{'max':>10}{'x plain':>9}{'warm s':>8}"]
    for r in table:
        if "error" in r:
            lines.append(f"  {r['variant']:<20}FAILED: {r['error'][:100]}")
            continue
        x = r.get("speedup_vs_plain")
        lines.append(f"  {r['variant']:<20}{r['updates_per_s']:>10.1f}{r['updates_per_s_min']:>10.1f}"
                     f"{r['updates_per_s_max']:>10.1f}{(f'{x:.2f}x' if x else '-'):>9}"
                     f"{r['warmup_s']:>8.1f}")
    ok = [r for r in table if "error" not in r and r["variant"] != "plain"]
    if ok:
        best = max(ok, key=lambda r: r["updates_per_s"])
        x = best.get("speedup_vs_plain") or 0.0
        met = best["updates_per_s"] >= TARGET_UPS and x >= TARGET_SPEEDUP
        lines.append(f"  fastest: {best['variant']} {best['updates_per_s']:.1f} updates/s, "
                     f"{x:.2f}x plain; targets >= {TARGET_UPS:.0f}/s and >= {TARGET_SPEEDUP:.0f}x: "
                     f"{'met' if met else 'NOT met'} (correctness: see the tests step)")
    return lines


def render_table(out: str) -> list[str]:
    lines = ["rendering (frames/s, one env per process):"]
    for r in rows(os.path.join(out, "render.jsonl")):
        if "error" in r:
            lines.append(f"  {r['renderer']:<7} N={r['processes']:<3} FAILED: {r['error'][:120]}")
        else:
            lines.append(f"  {r['renderer']:<7} N={r['processes']:<3} per process "
                         f"{r['fps_per_process_mean']:.1f}, total {r['fps_total']:.1f}  "
                         f"{'; '.join(r['renderers'])}")
    return lines


def learning(out: str) -> list[str]:
    lines = []
    for r in rows(os.path.join(out, "learning.jsonl")):
        lines.append(f"cartpole: exit {r['exit_code']}, wall {r['wall_s']} s, final "
                     f"{r['final_mean']} at {r['final_env_steps']} env steps, time to "
                     f"{r['target']}: {r['time_to_target_s']} s, median updates/s "
                     f"{r['updates_per_s_median']}")
        lines += [f"  env {e['env_steps']:>7} t {e['wall_s']:>6} s eval {e['mean']:.1f} "
                  f"+- {e['std']:.1f}" for e in r["evals"]]
    return lines or ["cartpole: no row"]


def main() -> None:
    out = sys.argv[1]
    steps = os.path.join(out, "steps.txt")
    lines = ["steps:"] + (["  " + s.strip() for s in open(steps)] if os.path.exists(steps) else [])
    print("\n".join(lines + learner_table(out) + render_table(out) + learning(out)))


if __name__ == "__main__":
    main()
