"""Policy lag in updates, and its bound (`--max-policy-lag U`): the learner's credit logic.

A pure object (no sockets, no clock of its own): the receiver and the service are thin shells
around it, and tests drive it with hand-made streams.

Every record carries the version of the policy that acted; version v was broadcast at update u_v
(`on_broadcast`), so a record taken at update u has a lag of u - u_v updates. With a bound U > 0:
- admission (`admit`): a record whose lag exceeds U is refused and never trained on. Versions
  only grow along an actor's stream, so the stale part of a chunk is a prefix: the rest is kept
  (the replay sees a gap, as for any lost records).
- updates (`credit`): an actor's newest version seen, v_a, is the oldest its later records can
  carry, so the learner may run updates only while u <= u_{v_a} + U for every actor it waits on.
  At zero credit it runs none and reads the data socket whatever the replay ratio says
  (`starved`) until those actors' records show newer versions: it waits for fresh records
  instead of training on a stale stream. Nothing the learner takes is then over the bound.
- broadcasts (`weights_every`): at most every U // 2 updates, so an actor acts with a policy at
  most about U / 2 updates old and its records have the other half of the bound for the trip.
This is credit-based flow control, the idea behind Reverb's rate limiters (inserts and samples
block each other within a bounded error) and SEED RL's inference loop (acting always uses the
learner's current weights), kept asynchronous: actors never wait for the learner per step.

An actor waited on that sends no record for `wait_s` while the learner is starved (dead, or gone)
is no longer waited on; its records, if any come later, are checked like any others.
"""
from __future__ import annotations

import threading
from collections import Counter

import numpy as np

from fpac_async.wire.schema import ProtocolError

KEEP_VERSIONS = 100_000  # versions whose broadcast update is kept; older ones count as stale
NO_LIMIT = 1 << 62


class PolicyVersionError(ProtocolError):
    """Steps whose version this learner never broadcast (negative, or newer than its own)."""

    reason = "policy_version"


class LagBound:
    """Lag in updates of every record taken, and the bound on it; thread-safe (the receiver
    thread admits, the main thread broadcasts and asks for credit)."""

    def __init__(self, max_lag: int = 0, version: int = 0, updates: int = 0,
                 wait_s: float = 10.0) -> None:
        if max_lag < 0:
            raise ValueError(f"max_lag must be >= 0 (0: no bound); got {max_lag}")
        self.max_lag = int(max_lag)
        self.wait_s = float(wait_s)
        self.latest = int(version)
        self.refused = 0  # records refused as older than the bound (cumulative)
        self._at: dict[int, int] = {int(version): int(updates)}  # version -> update at broadcast
        self._actors: dict[int, tuple[int, float]] = {}  # actor -> (newest version, when seen)
        self._starved_since: float | None = None
        self._republished = 0.0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the learner's side
    def weights_every(self, configured: int) -> int:
        """Updates between broadcasts: the configured interval, at most U // 2 (at least 1)."""
        return configured if not self.max_lag else max(1, min(configured, self.max_lag // 2))

    def on_broadcast(self, version: int, updates: int) -> None:
        """Version `version` goes out at update `updates` (call BEFORE publishing it)."""
        with self._lock:
            self._at[int(version)] = int(updates)
            self.latest = max(self.latest, int(version))
            while len(self._at) > KEEP_VERSIONS:
                self._at.pop(next(iter(self._at)))

    def credit(self, updates: int, now: float) -> int:
        """Updates that may run now; NO_LIMIT without a bound or with no actor to wait on."""
        if not self.max_lag:
            return NO_LIMIT
        with self._lock:
            if self._starved_since is not None and now - self._starved_since > self.wait_s:
                for actor, (_, seen) in list(self._actors.items()):
                    if now - seen > self.wait_s:  # silent while we read: not waited on
                        del self._actors[actor]
            if not self._actors:
                self._starved_since = None
                return NO_LIMIT
            oldest = min(self._at.get(v, -NO_LIMIT) for v, _ in self._actors.values())
            left = max(0, oldest + self.max_lag - int(updates))
            if left > 0:
                self._starved_since = None
            elif self._starved_since is None:
                self._starved_since = now
            return left

    @property
    def starved(self) -> bool:
        """True while the learner waits for fresher records (the receiver reads regardless)."""
        return self._starved_since is not None

    def starved_for(self, now: float) -> float:
        """Seconds the learner has been waiting for fresher records (0 when it is not)."""
        since = self._starved_since
        return 0.0 if since is None else now - since

    def republish_due(self, now: float) -> bool:
        """True once a second while the learner has waited over a second for fresher records:
        re-send the newest weights then (PUB is lossy: an actor may have missed them)."""
        if self.starved_for(now) <= 1.0 or now - self._republished <= 1.0:
            return False
        self._republished = now
        return True

    def forget(self, actor: int) -> None:
        """A new process under this actor id: its records start over."""
        with self._lock:
            self._actors.pop(actor, None)

    # ------------------------------------------------------------------ the receiver's side
    def admit(self, actor: int, versions: np.ndarray, updates: int,
              now: float) -> tuple[int, np.ndarray]:
        """(k, lags): the chunk's records from index k on may be taken, with these lags in
        updates; records before k are refused (older than the bound). PolicyVersionError for a
        version this learner never broadcast."""
        v = np.asarray(versions).astype(np.int64)
        if v.size == 0:
            return 0, np.zeros(0, np.int64)
        with self._lock:
            if v.min() < 0 or v.max() > self.latest:
                raise PolicyVersionError(
                    f"steps from actor {actor}: policy versions {int(v.min())}..{int(v.max())}, "
                    f"but this learner has broadcast 0..{self.latest}")
            known = np.array([self._at.get(x, -NO_LIMIT) for x in v.tolist()], np.int64)
            # A version older than those kept is as old as the oldest kept, at least.
            oldest = min(self._at.values())
            lags = int(updates) - np.where(known == -NO_LIMIT, oldest, known)
            k = 0
            if self.max_lag:
                stale = np.flatnonzero((known == -NO_LIMIT) | (lags > self.max_lag))
                k = int(stale[-1]) + 1 if stale.size else 0
                self.refused += k
            newest = int(v.max())
            if newest in self._at:
                prev = self._actors.get(actor, (newest, now))[0]
                self._actors[actor] = (max(prev, newest), now)
            return k, lags[k:]


class LagStats:
    """Lags in updates of the records taken in one metrics window: mean, p95, max."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()

    def add(self, lags: np.ndarray) -> None:
        values, n = np.unique(np.asarray(lags, np.int64), return_counts=True)
        self.counts.update(dict(zip(values.tolist(), n.tolist())))

    def row(self) -> dict[str, float | None]:
        """policy_lag_updates_mean / _p95 / _max (None when no record was taken)."""
        total = sum(self.counts.values())
        if not total:
            return {"policy_lag_updates_mean": None, "policy_lag_updates_p95": None,
                    "policy_lag_updates_max": None}
        values = sorted(self.counts)
        mean = sum(v * c for v, c in self.counts.items()) / total
        seen, p95 = 0, values[-1]
        for v in values:  # the smallest lag with at least 95% of the records at or below it
            seen += self.counts[v]
            if seen >= 0.95 * total:
                p95 = v
                break
        return {"policy_lag_updates_mean": round(mean, 2), "policy_lag_updates_p95": float(p95),
                "policy_lag_updates_max": float(values[-1])}
