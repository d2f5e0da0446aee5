"""MetricsLogger sinks (jsonl, csv, TensorBoard, console), append-on-resume, and RateMeter."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import time

import pytest
import torch

from learner.metrics import CSV_FIELDS, MetricsLogger, RateMeter, status_line


def _rows(path) -> list:
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_jsonl_and_csv_contents(tmp_path) -> None:
    out = io.StringIO()
    with MetricsLogger(str(tmp_path), tensorboard=False, stream=out) as log:
        log.log({"time": 1.5, "env_steps": 800, "agent_steps": 100, "updates": 50, "sps": 42.0,
                 "critic_loss": torch.tensor(0.25), "eval_return": math.nan,
                 "custom/thing": 3})
    rows = _rows(tmp_path / "metrics.jsonl")
    assert rows == [{"time": 1.5, "env_steps": 800, "agent_steps": 100, "updates": 50,
                     "sps": 42.0, "critic_loss": 0.25, "eval_return": None, "custom/thing": 3}]
    with open(tmp_path / "metrics.csv") as f:
        table = list(csv.reader(f))
    assert tuple(table[0]) == CSV_FIELDS
    assert table[0][:3] == ["time", "env_steps", "agent_steps"]
    row = dict(zip(table[0], table[1]))
    assert row["env_steps"] == "800" and row["critic_loss"] == "0.25" and row["sps"] == "42.0"
    assert row["eval_return"] == "" and row["episodes"] == ""  # missing values are empty
    assert "custom/thing" not in table[0]  # unknown keys go to the jsonl only


def test_resume_appends_and_never_truncates(tmp_path) -> None:
    for step in (100, 200):
        log = MetricsLogger(str(tmp_path), tensorboard=False, console=False)
        log.log({"env_steps": step})
        log.close()
    assert [r["env_steps"] for r in _rows(tmp_path / "metrics.jsonl")] == [100, 200]
    with open(tmp_path / "metrics.csv") as f:
        table = list(csv.reader(f))
    assert len(table) == 3 and table[0][0] == "time"  # one header, two rows
    assert [r[1] for r in table[1:]] == ["100", "200"]


def test_a_row_torn_by_a_killed_learner_does_not_swallow_the_next(tmp_path) -> None:
    log = MetricsLogger(str(tmp_path), tensorboard=False, console=False)
    log.log({"env_steps": 100})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"env_steps": 2')  # kill -9 in the middle of a row
    log = MetricsLogger(str(tmp_path), tensorboard=False, console=False)
    log.log({"env_steps": 300})
    log.close()
    with open(tmp_path / "metrics.jsonl") as f:
        lines = f.read().split("\n")
    assert lines[1] == '{"env_steps": 2' and json.loads(lines[2])["env_steps"] == 300


def test_time_defaults_to_now(tmp_path) -> None:
    before = time.time()
    with MetricsLogger(str(tmp_path), tensorboard=False, console=False) as log:
        log.log({"env_steps": 1})
    assert before <= _rows(tmp_path / "metrics.jsonl")[0]["time"] <= time.time()


def test_tensorboard_event_file_created_with_cleanrl_names(tmp_path) -> None:
    with MetricsLogger(str(tmp_path), console=False) as log:
        log.log({"env_steps": 1000, "train_return": 12.0, "sps": 300.0, "critic_loss": 0.5})
    events = [n for n in os.listdir(tmp_path / "tb") if n.startswith("events.out.tfevents")]
    assert len(events) == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"charts/episodic_return", "charts/SPS", "losses/critic"} <= tags
    (event,) = acc.Scalars("charts/episodic_return")
    assert event.step == 1000 and event.value == pytest.approx(12.0)


def test_console_plain_lines_when_not_a_tty(tmp_path) -> None:
    out = io.StringIO()
    with MetricsLogger(str(tmp_path), tensorboard=False, stream=out) as log:
        log.log({"env_steps": 12_345, "train_return": 101.25, "sps": 2100, "ups": 240.5,
                 "policy_version": 12, "actors": 8, "policy_lag": 1.4})
        log.log({"env_steps": 20_000})
    lines = out.getvalue().splitlines()
    assert lines[0] == ("env 12.3k | ret 101.2 | eval - | sps 2100 | ups 240.5 | v 12 | "
                        "actors 8 | lag 1.4")
    assert len(lines) == 2 and "\r" not in out.getvalue()


def test_console_rewrites_one_line_on_a_tty(tmp_path) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    with MetricsLogger(str(tmp_path), tensorboard=False, stream=out) as log:
        log.log({"env_steps": 10})
        log.log({"env_steps": 20})
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert status_line({"env_steps": 2_500_000}).startswith("env 2.50M")


def test_rate_meter_sliding_window() -> None:
    meter = RateMeter(window_s=10.0)
    assert meter.rate() == 0.0
    meter.update(0, now=0.0)
    meter.update(100, now=5.0)
    assert meter.rate() == pytest.approx(20.0)
    meter.update(300, now=10.0)
    assert meter.rate() == pytest.approx(30.0)  # (300 - 0) / 10
    meter.update(1300, now=20.0)  # window (10, 20]: keeps the sample at t=10 as the start
    assert meter.rate() == pytest.approx(100.0)
    with pytest.raises(ValueError):
        RateMeter(0.0)
