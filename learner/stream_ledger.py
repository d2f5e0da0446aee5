"""Where each (actor, env) record stream stands: records repeated, gaps, actor restarts.

Every `steps` chunk names its stream's first record (meta.step0; docs/INTERFACES.md,
"Environment stream"), and an actor process numbers its streams from 0. Per stream the ledger
keeps the next expected record number and counts what each chunk taken does to it:

- step0 == expected: the chunk continues the stream.
- step0 > expected: a gap; the records in between never arrived (an actor's send that failed).
  Counted as `records_missing`.
- step0 < expected: the chunk repeats records already taken: `records_repeated`. Nothing in
  this code sends a chunk twice; the fault tests check this count stays 0.
In every case the stream then stands after the chunk.

Counted, not refused: steps messages carry no process id, so a late chunk of a killed actor read
after its successor's first chunks (two connections are read fair-queued) would look like a repeat,
and refusing on that evidence would drop good records.

A restarted actor process starts its streams at 0 again. Its hello carries its pid: a hello from
a pid other than the one last seen for that actor id starts new streams for it (`restarts`).
A learner that resumed knows no stream: the first chunk of each one sets where it stands.

Memory: one entry per (actor id, env) seen, i.e. bounded by the actors accepted.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class LedgerCounts:
    chunks: int = 0
    records: int = 0
    gaps: int = 0
    records_missing: int = 0
    repeats: int = 0
    records_repeated: int = 0
    restarts: int = 0  # actor processes seen replacing an earlier one with the same id


class StreamLedger:
    """Stream positions and counts; `take` each chunk the receiver takes, `on_hello` each hello."""

    def __init__(self) -> None:
        self.expected: dict[tuple[int, int], int] = {}
        self.pids: dict[int, int] = {}
        self.counts = LedgerCounts()

    def on_hello(self, actor: int, pid: int | None) -> int | None:
        """An accepted hello: a new pid for a known actor id means a new process (its streams
        restart at record 0). Returns the replaced pid, if any."""
        if pid is None:
            return None
        old = self.pids.get(actor)
        self.pids[actor] = pid
        if old is None or old == pid:
            return None
        self.counts.restarts += 1
        for key in [k for k in self.expected if k[0] == actor]:
            del self.expected[key]
        return old

    def take(self, actor: int, env: int, step0: int, n: int) -> None:
        """A chunk of records [step0, step0 + n) was taken: count what it did to its stream."""
        c = self.counts
        expected = self.expected.get((actor, env))
        if expected is not None and step0 > expected:
            c.gaps += 1
            c.records_missing += step0 - expected
        elif expected is not None and step0 < expected:
            c.repeats += 1
            c.records_repeated += min(n, expected - step0)
        self.expected[(actor, env)] = step0 + n
        c.chunks += 1
        c.records += n

    def positions(self) -> dict[int, tuple[int, int]]:
        """actor -> (the furthest record of its streams taken, its number of streams): what
        actor-side pacing grants from (learner/pacing.py). Callable from another thread."""
        out: dict[int, tuple[int, int]] = {}
        for (actor, _), end in dict(self.expected).items():  # a copy: the receiver writes
            furthest, n = out.get(actor, (0, 0))
            out[actor] = (max(furthest, end), n + 1)
        return out

    def as_row(self) -> dict[str, int]:
        """The counts as metrics columns (stream_*)."""
        return {f"stream_{k}": v for k, v in dataclasses.asdict(self.counts).items()}
