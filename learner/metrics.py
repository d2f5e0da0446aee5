"""Learner metrics: metrics.jsonl, metrics.csv, TensorBoard scalars and a live console line.

docs/INTERFACES.md, "Run directory". One `log(row)` call writes the row to every sink:
- metrics.jsonl: every key of the row (NaN and infinities become null), flushed per row;
- evals.jsonl: one line per evaluation (log_eval), at the env steps of the evaluated policy;
- metrics.csv: the fixed columns CSV_FIELDS only (missing values empty), so the header never
  changes during a run; new keys go to the jsonl and TensorBoard only;
- TensorBoard (run_dir/tb): cleanrl-style names (charts/episodic_return, charts/SPS,
  losses/critic, ...) with env_steps as the x axis;
- the console: one status line (the learner's: learner.progress, with the budget and an ETA),
  rewritten in place (carriage return) on a TTY, a plain line per row otherwise (log files).
A resumed run appends to existing files; nothing is ever truncated.
"""
from __future__ import annotations

import collections
import csv
import json
import math
import os
import sys
import time
from typing import Any, Callable, Deque, Dict, Optional, TextIO, Tuple

REQUIRED_FIELDS = ("time", "env_steps", "agent_steps", "updates", "episodes", "policy_version",
                   "actors", "sps", "ups", "replay_size", "policy_lag", "train_return",
                   "eval_return", "rejected_messages")
LOSS_FIELDS = ("critic_loss", "actor_loss", "alpha_loss", "alpha", "entropy", "q", "target_q",
               "lr")
CSV_FIELDS = REQUIRED_FIELDS + LOSS_FIELDS

TB_NAMES = {
    "train_return": "charts/episodic_return", "eval_return": "charts/eval_return",
    "sps": "charts/SPS", "ups": "charts/UPS", "policy_lag": "charts/policy_lag",
    **{f"policy_lag_updates_{s}": f"charts/policy_lag_updates_{s}" for s in ("mean", "p95", "max")},
    "policy_lag_refused": "charts/policy_lag_refused",
    "policy_version": "charts/policy_version", "actors": "charts/actors",
    "replay_size": "charts/replay_size", "episodes": "charts/episodes",
    "updates": "charts/updates", "agent_steps": "charts/agent_steps",
    "rejected_messages": "charts/rejected_messages", "lr": "charts/learning_rate",
    "critic_loss": "losses/critic", "actor_loss": "losses/actor", "alpha_loss": "losses/alpha_loss",
    "alpha": "losses/alpha", "entropy": "losses/entropy", "q": "losses/q",
    "target_q": "losses/target_q",
}
_NOT_SCALARS = {"time", "env_steps"}


def _number(value: Any) -> Optional[float]:
    """A finite float, or None for missing/NaN/inf/non-numeric values."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _jsonable(value: Any) -> Any:
    """Plain JSON value: tensors and numpy scalars become Python numbers, NaN/inf become None."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()  # 0-d tensor or numpy scalar -> int / float / bool
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


class RateMeter:
    """Events per second over a sliding window of (time, cumulative count) samples."""

    def __init__(self, window_s: float = 10.0):
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0; got {window_s}")
        self.window_s = float(window_s)
        self._samples: Deque[Tuple[float, float]] = collections.deque()

    def update(self, count: float, now: Optional[float] = None) -> None:
        """Record the cumulative count at time `now` (default: time.monotonic())."""
        now = time.monotonic() if now is None else float(now)
        self._samples.append((now, float(count)))
        # Keep one sample at or before the window start so the rate spans the whole window.
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window_s:
            self._samples.popleft()

    def rate(self) -> float:
        """(newest count - oldest count) / elapsed over the window; 0.0 until two samples."""
        if len(self._samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


def _end_torn_line(path: str) -> None:
    """Append a newline to a file whose last line is unfinished (its writer was killed)."""
    try:
        with open(path, "rb+") as f:
            if f.seek(0, os.SEEK_END) > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
    except FileNotFoundError:
        pass


class MetricsLogger:
    """Writes metric rows to run_dir (jsonl, csv, TensorBoard) and a console status line."""

    def __init__(self, run_dir: str, tensorboard: bool = True, console: bool = True,
                 stream: Optional[TextIO] = None,
                 line: Optional[Callable[[Dict[str, Any]], str]] = None):
        """line: the console line of a row (default status_line; the learner passes
        learner.progress.Progress.line, fpac-train's progress line)."""
        os.makedirs(run_dir, exist_ok=True)
        self.run_dir = run_dir
        jsonl_path = os.path.join(run_dir, "metrics.jsonl")
        csv_path = os.path.join(run_dir, "metrics.csv")
        fresh = not os.path.exists(csv_path) or os.path.getsize(csv_path) == 0
        for path in (jsonl_path, csv_path):
            _end_torn_line(path)  # a learner killed mid-row: the next row starts on its own line
        self._jsonl = open(jsonl_path, "a", encoding="utf-8")
        self._csv_file = open(csv_path, "a", encoding="utf-8", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=CSV_FIELDS, extrasaction="ignore",
                                   restval="")
        if fresh:
            self._csv.writeheader()
            self._csv_file.flush()
        self._tb = None
        if tensorboard:
            # Imported here: tensorboard is a heavy import that only the learner needs.
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(log_dir=os.path.join(run_dir, "tb"))
        self._console = console
        self._line = line or status_line
        self._stream = stream if stream is not None else sys.stdout
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._last_env_steps = 0
        self._line_open = False

    def log(self, row: Dict[str, Any]) -> None:
        """Write one row (a dict of scalars; 'time' defaults to the current Unix time)."""
        row = dict(row)
        row.setdefault("time", time.time())
        clean = {k: _jsonable(v) for k, v in row.items()}
        self._jsonl.write(json.dumps(clean, allow_nan=False) + "\n")
        self._jsonl.flush()
        self._csv.writerow({k: ("" if clean.get(k) is None else clean[k]) for k in CSV_FIELDS})
        self._csv_file.flush()
        step = _number(row.get("env_steps"))
        if step is not None:
            self._last_env_steps = int(step)
        if self._tb is not None:
            self._write_tb(row, self._last_env_steps)
        if self._console:
            self._write_console(row)

    def log_eval(self, record: Dict[str, Any]) -> None:
        """One evaluation: a line in evals.jsonl (appended, flushed) and TensorBoard's
        charts/eval_return at the env steps of the evaluated policy (not the learner's now)."""
        clean = {k: _jsonable(v) if not isinstance(v, list) else [_jsonable(x) for x in v]
                 for k, v in record.items()}
        with open(os.path.join(self.run_dir, "evals.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(clean, allow_nan=False) + "\n")
        x, step = _number(record.get("mean_return")), _number(record.get("env_steps"))
        if self._tb is not None and x is not None and step is not None:
            self._tb.add_scalar("eval/mean_return", x, int(step))
            self._tb.flush()

    def _write_tb(self, row: Dict[str, Any], step: int) -> None:
        assert self._tb is not None
        for key, value in row.items():
            x = _number(value)
            if key in _NOT_SCALARS or x is None or isinstance(value, bool):
                continue
            name = TB_NAMES.get(key, key if "/" in key else f"misc/{key}")
            self._tb.add_scalar(name, x, step)
        self._tb.flush()

    def _write_console(self, row: Dict[str, Any]) -> None:
        line = self._line(row)
        if self._tty:
            self._stream.write("\r" + line.ljust(100)[:max(100, len(line))])
            self._line_open = True
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._line_open:
            self._stream.write("\n")
            self._stream.flush()
            self._line_open = False
        for f in (self._jsonl, self._csv_file):
            if not f.closed:
                f.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def status_line(row: Dict[str, Any]) -> str:
    """'env 12.3k | ret 101.2 | eval 98.0 | sps 2100 | ups 240.5 | v 12 | actors 8 | lag 1.4'."""
    def fmt(key: str, spec: str) -> str:
        x = _number(row.get(key))
        return "-" if x is None else format(x, spec)

    env = _number(row.get("env_steps")) or 0.0
    env_s = f"{env / 1e6:.2f}M" if env >= 1e6 else (f"{env / 1e3:.1f}k" if env >= 1e3
                                                     else f"{int(env)}")
    return (f"env {env_s} | ret {fmt('train_return', '.1f')} | eval {fmt('eval_return', '.1f')}"
            f" | sps {fmt('sps', '.0f')} | ups {fmt('ups', '.1f')} | v {fmt('policy_version', '.0f')}"
            f" | actors {fmt('actors', '.0f')} | lag {fmt('policy_lag', '.1f')}")
