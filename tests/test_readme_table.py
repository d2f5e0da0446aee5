"""The README's performance table is bench/readme_table.py's output from bench/results: a figure
edited by hand, or a results row that changed, fails here. And the generator's choices: newest
complete rows, quiet rows before shared ones, shared speeds labelled, repeats shown as a spread."""
from __future__ import annotations

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench import readme_table as T  # noqa: E402


@pytest.mark.parametrize("path", T.TARGETS, ids=["README", "bench-README"])
def test_readme_block_is_the_generators_output(path):
    with open(path) as f:
        text = f.read()
    assert text.count(T.BEGIN) == 1 and text.count(T.END) == 1, path
    current = text[text.index(T.BEGIN):text.index(T.END) + len(T.END)]
    assert current == T.block(), f"{path}: run python bench/readme_table.py --write"


MACHINE = {"host": "h", "cpu": "Test CPU", "cores": 2, "mem_gib": 8.0, "gpu": None}
VERSIONS = {"torch": "2", "mujoco": "3", "dm_control": "1", "envpool": "1", "libzmq": "4"}


def envs_row(commit: str, date: str, fps: float, **extra) -> dict:
    return {"bench": "envs", "commit": commit, "date": date, "machine": MACHINE,
            "versions": VERSIONS, "load_avg_1m": 0.1, "backend": "dmc", "setting": "benchmark",
            "task": "cartpole_swingup 84px", "frames_per_s": fps, "steps": 200, **extra}


def write(results, name: str, rows: list[dict]) -> None:
    with open(os.path.join(results, name), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def envs_figure(results) -> tuple[str, str]:
    (_, figure, src), = T.fig_envs(str(results))
    return figure, src


def test_newest_complete_quiet_rows_with_their_spread(tmp_path):
    incomplete = {**envs_row("eeeeeee", "2026-12-03T00:00", 999.0), "versions": {"torch": "2"}}
    write(tmp_path, "envs.jsonl", [
        envs_row("aaaaaaa", "2026-12-01T00:00", 10.0),
        envs_row("bbbbbbb", "2026-12-02T00:00", 60.0, machine_shared=False),
        envs_row("bbbbbbb", "2026-12-02T00:05", 70.0, machine_shared=False),
        envs_row("bbbbbbb", "2026-12-02T00:09", 62.0, machine_shared=False),
        envs_row("ccccccc", "2026-12-02T12:00", 500.0, settings={"machine_shared": True}),
        envs_row("ddddddd+dirty", "2026-12-04T00:00", 888.0),
        incomplete])
    figure, src = envs_figure(tmp_path)
    assert "62.0 (60.0-70.0, 3 runs)" in figure  # the median and range of the repeats
    assert "not a clean" not in figure and src.startswith("`envs.jsonl` bbbbbbb") and "quiet" in src


def test_shared_rows_only_when_nothing_else_and_labelled(tmp_path):
    write(tmp_path, "envs.jsonl", [envs_row("ccccccc", "2026-12-02T12:00", 500.0,
                                            machine_shared=True)])
    figure, src = envs_figure(tmp_path)
    assert figure.startswith("dmc benchmark (cartpole_swingup 84px) 500.0")
    assert "not a clean speed figure" in figure and "machine shared" in src


def test_annotations_mark_old_rows_shared(tmp_path):
    write(tmp_path, "envs.jsonl", [envs_row("aaaaaaa", "2026-12-01T00:00", 10.0),
                                   envs_row("bbbbbbb", "2026-12-02T00:00", 20.0)])
    write(tmp_path, "annotations.jsonl", [{"file": "envs.jsonl", "match": {"commit": "bbbbbbb"},
                                           "machine_shared": True, "why": "test"}])
    figure, src = envs_figure(tmp_path)
    assert figure.startswith("dmc benchmark (cartpole_swingup 84px) 10.0") and "aaaaaaa" in src


def test_no_complete_row_names_the_remeasure_script(tmp_path):
    write(tmp_path, "envs.jsonl", [{**envs_row("aaaaaaa", "2026-12-01T00:00", 10.0),
                                    "machine": "vm x86_64 2 cpus"}])
    assert envs_figure(tmp_path) == (T.MISSING, "-")


def test_write_replaces_only_the_block(tmp_path):
    text = f"# x\n\nabove\n\n{T.BEGIN}\nold figure 1.0\n{T.END}\n\nbelow\n"
    new = T.replace_block(text, T.block(str(tmp_path)))
    assert new.startswith("# x\n\nabove\n\n" + T.BEGIN) and new.endswith(T.END + "\n\nbelow\n")
    assert "old figure" not in new
    with pytest.raises(ValueError, match="markers"):
        T.replace_block("no markers", "x")


def test_feature_points_per_thread_count_only_the_benchmark_shape_and_layout(tmp_path):
    def fp(variant: str, ms: float, threads: int, **kw) -> dict:
        return {"bench": "feature_points", "commit": "aaaaaaa", "date": "2026-12-01T00:00",
                "machine": MACHINE, "versions": VERSIONS, "variant": variant, "mode": "forward",
                "layout": "contiguous", "device": "cpu", "shape": [128, 32, 35, 35],
                "median_ms": ms, "device_info": {"torch_threads": threads}, **kw}
    write(tmp_path, "feature_points.jsonl", [
        fp("separable", 2.0, 2), fp("separable", 3.0, 2), fp("spatial", 12.0, 2),
        fp("separable", 2.5, 1), fp("spatial", 20.0, 1),
        fp("separable", 99.0, 2, layout="channels_last"), fp("spatial", 99.0, 2, shape=[4, 8, 9, 9]),
        fp("spatial", 99.0, 2, mode="forward_backward")])
    one, two = T.fig_feature_points(str(tmp_path))
    assert one[0].endswith("1 threads") and one[1] == "separable 2.50; spatial 20.00"
    assert two[0].endswith("2 threads") and two[1] == "separable 2.50 (2.00-3.00, 2 runs); spatial 12.00"


def test_lag_learning_pools_the_seeds_of_every_commit(tmp_path):
    def row(commit, date, runner, seed, final, **extra):
        return {"bench": "learning", "preset": "lag-learning", "commit": commit, "date": date,
                "machine": MACHINE, "versions": VERSIONS, "runner": runner, "seed": seed,
                "final_mean": final, **extra}
    write(tmp_path, "learning.jsonl", [
        row("aaaaaaa", "2026-12-01T00:00", "serial", 0, 700.0),
        row("aaaaaaa", "2026-12-01T01:00", "actors-1", 0, 800.0),
        row("bbbbbbb", "2026-12-02T00:00", "serial", 1, 900.0),
        row("bbbbbbb", "2026-12-02T01:00", "actors-1", 1, 600.0),
        row("ccccccc+dirty", "2026-12-03T00:00", "serial", 2, 0.0),  # incomplete: left out
        row("bbbbbbb", "2026-12-02T02:00", "actors-4", 1, 650.0, machine_shared=True),
        row("bbbbbbb", "2026-12-02T03:00", "actors-4", 0, 200.0,
            config={"learner": {"max_policy_lag": 100}}),  # with the lag bound: its own runner
        row("bbbbbbb", "2026-12-02T04:00", "actors-4", 2, 830.0,
            config={"learner": {"actor_lead": 200}})])  # paced actors: their own runner too
    (_, figure, src), = T.fig_lag_learning(str(tmp_path))
    assert "serial 800 +- 100 (seeds 0, 1: 700, 900)" in figure
    assert "actors-1 (no bound, unpaced) 700 +- 100 (seeds 0, 1: 800, 600)" in figure
    assert "actors-4 (no bound, unpaced) (seed 1: 650)" in figure  # one seed: no spread claimed
    assert "actors-4 (bound 100, unpaced) (seed 0: 200)" in figure
    assert "actors-4 (no bound, lead 200) (seed 2: 830)" in figure
    assert src.startswith("`learning.jsonl` aaaaaaa, bbbbbbb, 2026-12-01 00:00") and "shared" in src


def test_lag_ratio_keeps_the_newest_rows_of_each_hold(tmp_path):
    """A hold run later (actor pacing) does not hide the holds measured before it; a hold
    re-measured shows only its newest commit."""
    def row(commit, date, actors, share, bound=0, lead=0):
        return {"bench": "learning", "preset": "lag-ratio", "commit": commit, "date": date,
                "machine": MACHINE, "versions": VERSIONS, "actors": actors,
                "max_policy_lag": bound, "policy_lag_updates_p95": 10.0 * actors,
                "updates_share": {"50%": share, "100%": share},
                "config": {"learner": {"max_policy_lag": bound, "actor_lead": lead}}}
    write(tmp_path, "learning.jsonl", [
        row("aaaaaaa", "2026-12-01T00:00", 1, 0.1, bound=100),
        row("aaaaaaa", "2026-12-01T01:00", 1, 0.2),
        row("bbbbbbb", "2026-12-02T00:00", 1, 0.3, lead=200),
        row("bbbbbbb", "2026-12-02T01:00", 4, 0.4, lead=200),
        row("ccccccc", "2026-12-03T00:00", 1, 0.5)])  # the unpaced hold again: replaces 0.2
    (_, figure, src), = T.fig_ratio(str(tmp_path))
    assert figure == ("no bound, unpaced, 1 actor: 0.5 / 0.5, lag p95 10; "
                      "no bound, lead 200, 1 actor: 0.3 / 0.3, lag p95 10; "
                      "no bound, lead 200, 4 actors: 0.4 / 0.4, lag p95 40; "
                      "bound 100, unpaced, 1 actor: 0.1 / 0.1, lag p95 10"), figure
    assert src.startswith("`learning.jsonl` aaaaaaa, bbbbbbb, ccccccc, 2026-12-01 00:00"), src
