"""Link bookkeeping of the replay: which slots hold sampleable transitions, and their frame stacks.

Records from all (actor, env) streams share one ring of `capacity` slots. Record number g (global,
counting every record ever added) lives in slot g % capacity and stays alive while
g >= total - capacity. Links are stored as global numbers, so a link to an overwritten slot is
detected by that comparison alone (the global number is the slot's write generation).

Per slot:
- prev:   global number of the previous record of the same episode segment (-1: none).
- next:   global number of the next record of the stream when it is NOT a FIRST (-1: none).
- anchor: global number of the oldest record the transition at this slot reads (the oldest frame
          of its stack; s' and the next record are newer). -1 when the stack is unknown.
- valid:  the transition at this slot can be sampled (next exists, is not FIRST, anchor alive).

Gaps (a chunk whose step0 is not the stream's next index: dropped message, actor restart) start a
new *segment*: the record after the gap is not linked to the one before it, and since its earlier
frames are unknown, its stack is known only once S-1 more records of the segment have arrived
(or a FIRST starts a new episode). Records inside a segment are truly consecutive, so every stack
rebuilt from them is exact. The record just before a gap never gets a next record: not sampled.
"""
from __future__ import annotations

import numpy as np


class _Stream:
    """Where one (actor, env) stream stands: next expected step and its segment's last S records."""

    __slots__ = ("expected", "hist", "seg_first")

    def __init__(self) -> None:
        self.expected = -1
        self.hist: list[int] = []  # global numbers of the segment's last <= S records, oldest first
        self.seg_first = False  # the segment began at a FIRST record (episode start is known)


class ReplayIndex:
    """Pure bookkeeping over global record numbers; the caller holds the replay's lock."""

    def __init__(self, capacity: int, frame_stack: int) -> None:
        if capacity < 2 or frame_stack < 1:
            raise ValueError(f"capacity must be >= 2 and frame_stack >= 1; got {capacity}, {frame_stack}")
        self.capacity, self.stack = capacity, frame_stack
        self.prev = np.full(capacity, -1, np.int64)
        self.next = np.full(capacity, -1, np.int64)
        self.anchor = np.full(capacity, -1, np.int64)
        self.valid = np.zeros(capacity, bool)
        self.first = np.zeros(capacity, bool)
        self.total = 0  # records ever added (the next record's global number)
        self.num_valid = 0
        self.streams: dict[tuple[int, int], _Stream] = {}

    @property
    def oldest(self) -> int:
        """Global number of the oldest record still stored."""
        return max(0, self.total - self.capacity)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.prev, self.next, self.anchor, self.valid, self.first))

    def _invalidate(self, slot: int) -> None:
        if self.valid[slot]:
            self.valid[slot] = False
            self.num_valid -= 1

    def _evict(self, g_old: int) -> None:
        """Forget record g_old: its own transition and those whose stack reads its frame."""
        slot = g_old % self.capacity
        self._invalidate(slot)
        # A stack reaches at most S-1 records back, so the dependants are among the stream's next
        # S-1 records (next links reach them: they were linked while g_old was alive). Not all of
        # them: near an episode start some still read older frames (the repeated FIRST).
        g = self.next[slot]
        for _ in range(self.stack - 1):
            if g < 0:
                break
            if self.anchor[g % self.capacity] == g_old:
                self._invalidate(g % self.capacity)
            g = self.next[g % self.capacity]

    def append(self, stream: tuple[int, int], step: int, is_first: bool) -> int:
        """Register the stream's record number `step`; returns its slot (the caller writes data)."""
        g = self.total
        if g >= self.capacity:
            self._evict(g - self.capacity)
        self.total = g + 1
        st = self.streams.get(stream)
        if st is None:
            st = self.streams[stream] = _Stream()
        contiguous = step == st.expected and bool(st.hist)
        last = st.hist[-1] if contiguous else -1
        if is_first:
            st.hist, st.seg_first = [g], True
        elif contiguous:
            st.hist = (st.hist + [g])[-self.stack:]
        else:  # gap or unseen stream: a new segment with unknown earlier frames
            st.hist, st.seg_first = [g], False
        st.expected = step + 1
        slot = g % self.capacity
        self.first[slot] = is_first
        self.valid[slot] = False
        self.next[slot] = -1
        self.prev[slot] = last if contiguous and not is_first else -1
        if len(st.hist) >= self.stack:
            self.anchor[slot] = st.hist[-self.stack]
        else:
            self.anchor[slot] = st.hist[0] if st.seg_first else -1
        # The previous record gains its (s, a, r, s') transition unless this record starts an episode.
        if contiguous and not is_first and last >= self.oldest:
            pslot = last % self.capacity
            self.next[pslot] = g
            if self.anchor[pslot] >= self.oldest:
                self.valid[pslot] = True
                self.num_valid += 1
        return slot

    def stacks(self, slots: np.ndarray) -> np.ndarray:
        """Slots of the S+1 frames [o_{i-S+1} .. o_i, o_{i+1}] of valid transitions: int64 [B, S+1].

        obs is columns [0:S], next_obs columns [1:S+1]. Before an episode's FIRST record the FIRST
        frame is repeated (INTERFACES.md: o_{i-1} := o_i when i is FIRST).
        """
        s = self.stack
        idx = np.empty((len(slots), s + 1), np.int64)
        idx[:, s] = self.next[slots] % self.capacity
        idx[:, s - 1] = slots
        for k in range(s - 2, -1, -1):
            cur = idx[:, k + 1]
            p = self.prev[cur]
            idx[:, k] = np.where(self.first[cur] | (p < 0), cur, p % self.capacity)
        return idx

    def state_dict(self) -> dict:
        keys = list(self.streams)
        hist = np.full((len(keys), self.stack), -1, np.int64)
        for row, k in enumerate(keys):
            h = self.streams[k].hist
            hist[row, :len(h)] = h
        n = min(self.total, self.capacity)
        return {"total": self.total, "num_valid": self.num_valid,
                "prev": self.prev[:n].copy(), "next": self.next[:n].copy(),
                "anchor": self.anchor[:n].copy(), "valid": self.valid[:n].copy(),
                "first": self.first[:n].copy(),
                "stream_keys": np.asarray(keys, np.int64).reshape(-1, 2),
                "stream_expected": np.asarray([self.streams[k].expected for k in keys], np.int64),
                "stream_seg_first": np.asarray([self.streams[k].seg_first for k in keys], bool),
                "stream_hist": hist}

    def load_state_dict(self, d: dict) -> None:
        n = min(int(d["total"]), self.capacity)
        if len(d["prev"]) != n:
            raise ValueError(f"replay index state holds {len(d['prev'])} slots, expected {n}")
        self.__init__(self.capacity, self.stack)
        self.total, self.num_valid = int(d["total"]), int(d["num_valid"])
        for name in ("prev", "next", "anchor", "valid", "first"):
            getattr(self, name)[:n] = d[name]
        for key, exp, sf, h in zip(d["stream_keys"], d["stream_expected"],
                                   d["stream_seg_first"], d["stream_hist"]):
            st = self.streams[(int(key[0]), int(key[1]))] = _Stream()
            st.expected, st.seg_first, st.hist = int(exp), bool(sf), [int(x) for x in h if x >= 0]
