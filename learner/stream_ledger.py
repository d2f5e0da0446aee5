"""Where each (actor, env) record stream stands, so that no record is counted twice.

Every `steps` chunk names its stream's first record (meta.step0; docs/INTERFACES.md,
"Environment stream"), and an actor process numbers its streams from 0. Per stream the ledger
keeps the next expected record number:

- step0 == expected: the chunk continues the stream.
- step0 > expected: a gap; the records in between never arrived (an actor's send that failed,
  records in flight when the learner was killed). Counted as `records_missing`.
- step0 < expected: the chunk repeats records already taken: refused (DuplicateError) and counted
  as `records_duplicated`. Nothing in this code sends a chunk twice; this is the proof.

A restarted actor process starts its streams at 0 again. Its hello carries its pid: a hello from
a pid other than the one last seen for that actor id starts new streams for it (`restarts`).
A learner that resumed knows no stream: the first chunk of each one sets where it stands.

Memory: one entry per (actor id, env) seen, i.e. bounded by the actors accepted.
"""
from __future__ import annotations

import dataclasses

from fpac_async.protocol import ProtocolError


class DuplicateError(ProtocolError):
    """A steps chunk whose records this learner has already taken."""

    reason = "duplicate"


@dataclasses.dataclass
class LedgerCounts:
    chunks: int = 0
    records: int = 0
    gaps: int = 0
    records_missing: int = 0
    duplicates: int = 0
    records_duplicated: int = 0
    restarts: int = 0  # actor processes seen replacing an earlier one with the same id


class StreamLedger:
    """Checks each chunk against its stream's position; `check` then `commit` (see Receiver)."""

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

    def check(self, actor: int, env: int, step0: int, n: int) -> None:
        """Raise DuplicateError if the chunk's records [step0, step0 + n) were taken already."""
        expected = self.expected.get((actor, env))
        if expected is not None and step0 < expected:
            self.counts.duplicates += 1
            self.counts.records_duplicated += min(n, expected - step0)
            raise DuplicateError(f"steps from actor {actor} env {env}: records {step0}.."
                                 f"{step0 + n - 1} repeat ones taken already (the stream is at "
                                 f"{expected})")

    def commit(self, actor: int, env: int, step0: int, n: int) -> None:
        """The chunk was taken: move its stream past it, counting any gap before it."""
        expected = self.expected.get((actor, env))
        if expected is not None and step0 > expected:
            self.counts.gaps += 1
            self.counts.records_missing += step0 - expected
        self.expected[(actor, env)] = step0 + n
        self.counts.chunks += 1
        self.counts.records += n

    def as_row(self) -> dict[str, int]:
        """The counts as metrics columns (stream_*)."""
        return {f"stream_{k}": v for k, v in dataclasses.asdict(self.counts).items()}
