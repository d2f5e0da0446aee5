"""Restart back-off of one supervised slot, modelled on Kubernetes' CrashLoopBackOff.

A crashed child is restarted after a delay that doubles with each crash in a row:
base, 2 base, 4 base, ... capped at `max_s` (defaults 1 s, 2 s, 4 s ... 60 s). A child that ran for
at least `reset_after_s` before it crashed counts as stable: its crash starts a new series at `base`
(Kubernetes resets its back-off after 10 minutes of running; a training actor that has streamed for
a minute has shown that it works). A slot is never given up because of a burst: it keeps being
retried at the capped rate, unless `max_restarts` (> 0) restarts in a row did not help.

Pure bookkeeping: the caller passes the clock readings (seconds, any monotonic origin).
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class RestartBackoff:
    base_s: float = 1.0
    max_s: float = 60.0
    reset_after_s: float = 60.0
    max_restarts: int = 0  # restarts in a row (no stable run between) before giving up; 0: never
    crashes_in_a_row: int = 0
    started_at: float | None = None

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.max_s < self.base_s or self.reset_after_s < 0 \
                or self.max_restarts < 0:
            raise ValueError(f"need 0 < base_s <= max_s, reset_after_s >= 0 and max_restarts "
                             f">= 0; got {self.base_s}, {self.max_s}, {self.reset_after_s}, "
                             f"{self.max_restarts}")

    def started(self, now: float) -> None:
        """The child was (re)started at `now`."""
        self.started_at = now

    def ran_for(self, now: float) -> float:
        return 0.0 if self.started_at is None else now - self.started_at

    def crashed(self, now: float) -> float | None:
        """The child crashed at `now`: the delay before its restart, or None to give up."""
        if self.ran_for(now) >= self.reset_after_s:
            self.crashes_in_a_row = 0  # it ran stably: a new series
        self.crashes_in_a_row += 1
        if self.max_restarts and self.crashes_in_a_row > self.max_restarts:
            return None
        return self.delay(self.crashes_in_a_row)

    def delay(self, crashes_in_a_row: int) -> float:
        """base * 2^(n-1), capped at max_s."""
        exponent = min(crashes_in_a_row - 1, 62)  # 2**62 s is past any cap
        return min(self.max_s, self.base_s * 2.0 ** exponent)
