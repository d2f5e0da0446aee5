"""Paper-style learning curves of a grid: one panel per task, one line per agent (mean ± std
across seeds against env steps, as in the FPAC paper's Figs. 2, 4, 5, 8, 11-14), with the
published scores at 100k and 500k env steps as markers with error bars.

Issue 20: the y axis always includes 0 (returns are >= 0 on DMC), so the noise of a short run is
not magnified into a "steep decline"; the legend says "1 seed", not "1 seeds"."""
from __future__ import annotations

import math
import textwrap
from typing import Sequence

from studies.curves import Curve, mean_curve
from studies.references import Reference

REF_MARKERS = ("s", "D", "^", "v", "P", "X")


def plot_grid(path: str, curves: dict[tuple[str, str], list[Curve]], tasks: Sequence[str],
              agents: Sequence[str], refs: Sequence[Reference], ref_steps: Sequence[int],
              step: float | None = None, title: str = "") -> str:
    """Write the figure to `path` (PNG); `step` is the grid of env steps of the mean curves."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig = draw_grid(curves, tasks, agents, refs, ref_steps, step, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_grid(curves: dict[tuple[str, str], list[Curve]], tasks: Sequence[str],
              agents: Sequence[str], refs: Sequence[Reference], ref_steps: Sequence[int],
              step: float | None = None, title: str = ""):
    """The figure of plot_grid (a matplotlib Figure; the caller closes it)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.5 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, task in enumerate(tasks):
        ax = axes[i // cols][i % cols]
        for j, agent in enumerate(agents):
            runs = [c for c in curves.get((task, agent), []) if c]
            points = mean_curve(runs, step)
            if not points:
                continue
            xs = [p.x for p in points]
            mean = [p.mean for p in points]
            colour = colours[j % len(colours)]
            seeds = f"{len(runs)} seed{'s' if len(runs) != 1 else ''}"
            ax.plot(xs, mean, "-", color=colour, label=f"{agent} ({seeds})")
            ax.fill_between(xs, [p.mean - p.std for p in points],
                            [p.mean + p.std for p in points], color=colour, alpha=0.2)
        for k, ref in enumerate(refs):
            pairs = [(x, ref.at(task, x)) for x in ref_steps]
            pairs = [(x, p) for x, p in pairs if p is not None]
            if not pairs:
                continue
            ax.errorbar([x for x, _ in pairs], [p[0] for _, p in pairs],
                        yerr=[p[1] for _, p in pairs], fmt=REF_MARKERS[k % len(REF_MARKERS)],
                        color="0.3", capsize=3, markersize=5, linestyle="none", label=ref.method)
        low, high = ax.get_ylim()  # from 0: a short run's noise is not a "steep decline"
        if min(0.0, low) < max(0.0, high):
            ax.set_ylim(min(0.0, low), max(0.0, high))
        ax.set_title(task)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("evaluation return")
        ax.grid(alpha=0.3)
    for i in range(len(tasks), rows * cols):
        axes[i // cols][i % cols].axis("off")
    handles, labels = {}, []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    fig.legend([handles[lab] for lab in labels], labels, loc="lower center",
               ncol=min(4, max(1, len(labels))), frameon=False)
    if title:
        fig.suptitle(textwrap.fill(title, width=50 * cols), fontsize=10)
    legend_rows = math.ceil(len(labels) / min(4, max(1, len(labels))))
    fig.tight_layout(rect=(0, 0.06 * legend_rows / rows, 1, 1))
    return fig
