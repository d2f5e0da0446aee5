"""The progress line of fpac-train and fpac-learner (issue 20 "Silent waits", issue 21 "Progress
that tells the truth").

    [ 42.0%] 4.2k/10.0k env steps | env 4.2k | ret ... | actors 8 | lag 1.4 | updates 3100 | eta 12m30s

Both commands print this line for each metrics row (fpac-learner from its MetricsLogger, fpac-train
by tailing metrics.jsonl). The ETA comes from the UPDATE rate after the random phase: the replay
ratio fixes the updates a run owes at its budget, floor(ratio * (budget agent steps - random
steps - ratio_offset)), and the learner runs them at its own pace, however fast actors step.
The rate is the mean since the first row after the random phase (not a 10 s window: stable,
never '-' for a row with a pause in it). During the random phase nothing says how fast updates
will be, so the line says so ('eta after the random phase') instead of extrapolating the random
phase's env-step rate (which read 32 min on a cartpole run that then took 15 h). With a replay
ratio of 0 (no updates) the ETA is the env-step rate's.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from learner.metrics import status_line


def count(n: float) -> str:
    """1234 -> '1.2k', 2500000 -> '2.50M'."""
    return f"{n / 1e6:.2f}M" if n >= 1e6 else (f"{n / 1e3:.1f}k" if n >= 1e3 else f"{int(n)}")


def duration(seconds: float) -> str:
    """75 -> '1m15s', 54000 -> '15h00m'."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Formats metric rows as the progress line; keeps the update-rate reference point."""

    def __init__(self, budget_env_steps: int, replay_ratio: float = 0.0,
                 initial_random_steps: int = 0, action_repeat: int = 1) -> None:
        self.budget = max(1, int(budget_env_steps))
        self.ratio = Fraction(replay_ratio).limit_denominator(10**6)
        self.initial = int(initial_random_steps)
        self.action_repeat = max(1, int(action_repeat))
        self._origin: tuple[float, float] | None = None  # (time, updates) after the random phase

    @classmethod
    def of(cls, cfg: Any) -> "Progress":
        """The progress of a resolved RunConfig's run."""
        return cls(cfg.env_steps, cfg.replay.replay_ratio, cfg.replay.initial_random_steps,
                   cfg.env.action_repeat)

    def line(self, row: dict) -> str:
        env = int(row.get("env_steps") or 0)
        frac = min(1.0, env / self.budget)
        return (f"[{100 * frac:5.1f}%] {count(env)}/{count(self.budget)} env steps | "
                f"{status_line(row)} | updates {int(row.get('updates') or 0)} | "
                f"eta {self.eta(row)}")

    def eta(self, row: dict) -> str:
        """The ETA text of a row (rows must come in time order)."""
        env = int(row.get("env_steps") or 0)
        if env >= self.budget:
            return "0s"
        if self.ratio == 0:
            sps = float(row.get("sps") or 0.0)
            return duration((self.budget - env) / sps) if sps > 0 else "-"
        agent = int(row.get("agent_steps") or env // self.action_repeat)
        start = self.initial + int(row.get("ratio_offset") or 0)
        updates = float(row.get("updates") or 0)
        now = float(row.get("time") or 0.0)
        if agent < start or updates <= 0:
            return "after the random phase"
        if self._origin is None or updates < self._origin[1]:
            self._origin = (now, updates)
        budget_agent = math.ceil(self.budget / self.action_repeat)
        owed = (max(0, budget_agent - start) * self.ratio.numerator) // self.ratio.denominator
        left = max(0.0, owed - updates)
        t0, u0 = self._origin
        rate = (updates - u0) / (now - t0) if now > t0 and updates > u0 else 0.0
        rate = rate or float(row.get("ups") or 0.0)  # the first rows: the window's rate
        return duration(left / rate) if rate > 0 else "measuring"
