"""fpac-scaling: the report maths by hand, /proc reading, and one short real study on point_reach.

The end-to-end study runs a real learner and 1 then 2 real actors (tiny networks) for a few seconds
each; it checks the outputs' columns and that the derived figures follow from the measured ones,
never how fast anything was.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from studies import scaling_report as report
from studies.scaling import actor_pids, proc_cpu_rss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_efficiency_by_hand() -> None:
    # thr(1) = 100: 2 actors at 180 -> speedup 1.8, efficiency 0.9; 4 at 200 -> 2.0, 0.5.
    rows = [{"actors": 1, "env_sps": 100.0}, {"actors": 2, "env_sps": 180.0},
            {"actors": 4, "env_sps": 200.0}]
    report.add_efficiency(rows)
    assert [r["speedup"] for r in rows] == pytest.approx([1.0, 1.8, 2.0])
    assert [r["efficiency"] for r in rows] == pytest.approx([1.0, 0.9, 0.5])


def test_efficiency_without_one_actor_uses_smallest_count() -> None:
    # Baseline N0 = 2 at 150: 8 actors at 450 -> speedup 3, efficiency 3 * 2 / 8 = 0.75.
    rows = [{"actors": 8, "env_sps": 450.0}, {"actors": 2, "env_sps": 150.0}]
    report.add_efficiency(rows)
    assert rows[0]["speedup"] == pytest.approx(3.0)
    assert rows[0]["efficiency"] == pytest.approx(0.75)


def test_efficiency_with_no_throughput_is_none() -> None:
    rows = [{"actors": 1, "env_sps": 0.0}, {"actors": 2, "env_sps": None}]
    report.add_efficiency(rows)
    assert all(r["efficiency"] is None and r["speedup"] is None for r in rows)


def test_markdown_shows_missing_as_na() -> None:
    row = {k: None for k in report.COLUMNS}
    row.update(task="t", backend="numpy", actors=1, envs_per_actor=1, replay_ratio=0.0,
               initial_random_steps=0, warmup_s=1.0, window_s=2.0,
               learner_device="cpu", machine="m", cores=2, commit="abc", date="d", env_sps=10.0)
    md = report.markdown_table([row], "T")
    table_row = [line for line in md.splitlines() if line.startswith("| 1 |")]
    assert table_row and "| 10.0 |" in table_row[0] and "n/a" in table_row[0]


def test_proc_reading_of_this_process() -> None:
    cpu, rss = proc_cpu_rss(os.getpid())
    assert cpu > 0 and rss > 1.0  # a running Python interpreter has used CPU and holds memory
    assert proc_cpu_rss(2**22 + 12345) is None  # no such pid (above the default pid_max)
    assert actor_pids(os.getpid()) == []  # pytest spawned no multiprocessing children here


def test_short_study_on_point_reach(tmp_path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "studies.scaling", "--task", "point_reach", "--actors", "1,2",
           "--seconds", "4", "--warmup", "2", "--out", str(out), "--name", "scaling-test",
           "--run-dir", str(tmp_path / "runs"), "--gpus", "0", "--replay-ratio", "0",
           "--initial-random-steps", "50", "--capacity", "2000", "--batch-size", "16",
           "--num-points", "4", "--conv-channels", "8", "--hidden-dim", "32",
           "--hidden-layers", "1", "--log-level", "WARNING", "--note", "a test run"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "scaling-test.csv") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == report.COLUMNS
        rows = list(reader)
    assert [int(r["actors"]) for r in rows] == [1, 2]
    sps = [float(r["env_sps"]) for r in rows]
    assert all(s > 0 for s in sps)
    # Efficiency is computed from the measured throughputs: thr(N) / (N thr(1)).
    assert float(rows[0]["efficiency"]) == pytest.approx(1.0)
    assert float(rows[1]["efficiency"]) == pytest.approx(sps[1] / (2 * sps[0]), rel=1e-6)
    for r in rows:
        assert r["replay_ratio"] == "0.0" and r["ratio_adherence"] == ""  # n/a at ratio 0
        assert float(r["window_s"]) >= 4.0
        assert float(r["learner_rss_mb"]) > 0 and float(r["actor_rss_mb_mean"]) > 0
        assert 0 <= float(r["render_frac"]) <= 1 and 0 <= float(r["policy_frac"]) <= 1
    md = (out / "scaling-test.md").read_text()
    assert "| actors | env steps/s |" in md and "Replay ratio 0" in md and "a test run" in md
    assert md.count("\n| 1 |") == 1 and md.count("\n| 2 |") == 1
    pytest.importorskip("matplotlib")
    with open(out / "scaling-test.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_time_to_return_outputs(tmp_path) -> None:
    curve = [{"actors": 2, "wall_s": 60.0, "env_sps": 100.0, "env_steps": 6000, "agent_steps": 750,
              "updates": 700, "train_return": 100.0, "eval_return": None},
             {"actors": 2, "wall_s": 120.0, "env_sps": 100.0, "env_steps": 12000,
              "agent_steps": 1500, "updates": 1450, "train_return": 300.0, "eval_return": 320.0}]
    results = [{"actors": 2, "curve": curve, "time_to_return_s": 120.0, "env_steps": 12000,
                "wall_s": 120.0, "task": "t", "machine": "m", "commit": "c", "date": "d"},
               {"actors": 1, "curve": curve[:1], "time_to_return_s": None, "env_steps": 6000,
                "wall_s": 60.0, "task": "t", "machine": "m", "commit": "c", "date": "d"}]
    out = report.write_return_outputs(str(tmp_path / "ttr"), results, "eval_return", 300.0,
                                      600.0, "ttr")
    with open(out["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and tuple(rows[0]) == report.CURVE_COLUMNS
    md = open(out["md"]).read()
    assert "| 2 | 2.0 (120 s) | 12000 | 2.0 |" in md and "| 1 | not reached |" in md
