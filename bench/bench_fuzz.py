"""A bounded fuzz run of protocol.decode: hostile inputs for a fixed time, every outcome counted.

Inputs come from three generators, round robin, from one seeded RNG:
  bytes     1-5 frames of random bytes (0-600 each)
  msgpack   a random msgpack value (nested maps, lists, ints of any size, floats, str, bin) as the
            header, plus 0-3 random frames
  mutated   a valid message of a random kind with 1-3 edits: a header field replaced or deleted,
            an array spec entry or a meta value replaced, bytes of the header flipped, a frame cut,
            extended, dropped or duplicated
Outcomes: accepted (decoded, and the message re-encodes and decodes to the same one), rejected
per ProtocolError reason, and bad: any other exception, or an accepted message that does not
round-trip. The property (the tests/test_protocol_properties.py one) holds iff bad == 0; the first
few bad inputs are kept (hex) in the row. Writes one row to bench/results/fuzz.jsonl.

    .venv/bin/python bench/bench_fuzz.py --seconds 180 --seed 0
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from typing import Any, Callable

import msgpack
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.provenance import append_row, provenance  # noqa: E402
from fpac_async.wire import protocol as P  # noqa: E402

RESULTS = os.path.join(ROOT, "bench", "results", "fuzz.jsonl")
CAP = 2**16  # decode's max_bytes here: small, so the size limits are reached too
KEEP_BAD = 5


def valid_messages() -> list[list[bytes]]:
    n = 3
    flags = np.array([P.FIRST, 0, P.TERMINAL], np.uint8)
    msgs = [P.steps_message(1, 0, 0, 0, np.zeros((n, 3, 8, 8), np.uint8), np.zeros((n, 2), np.float32),
                            np.ones(n, np.float32), flags, np.zeros(n, np.int32),
                            cam=np.zeros((n, 2), np.float32)),
            P.steps_message(2, 1, 5, 40, None, np.zeros((n, 1), np.float32), np.zeros(n, np.float32),
                            np.zeros(n, np.uint8), np.ones(n, np.int32), state=np.zeros((n, 4), np.float32)),
            P.hello_message(1, "point_reach", 7, (3, 8, 8), 2, settings={"action_repeat": 2}),
            P.stats_message(1, 3, [{"return": 1.5, "length": 10, "env": 0}], {"fps": 9.0}),
            P.eval_result_message(4, 1, 2, [1.0, 2.0], [5, 6], version=3, wall_s=0.5),
            P.heartbeat_message(4, 2, 3, True, eval_id=2, episodes_done=1),
            P.policy_message(1, 2, b"script", np.zeros(6, np.float32), [["w", [2, 3]]]),
            P.weights_message(2, 3, np.zeros(6, np.float32), [["w", [6]]], run=5),
            P.weights_message(2, 3, np.ones(6, np.float32), [["w", [6]]], run=5, bf16=True),
            P.eval_message(3, 3, 1, 4, 2), P.stop_message(4, 3),
            P.refuse_message(5, 3, 1, P.ACTOR, "x")]
    return [[bytes(f) for f in P.encode(m)] for m in msgs]


class Inputs:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.valid = valid_messages()

    def _bytes(self, hi: int) -> bytes:
        return self.rng.bytes(int(self.rng.integers(0, hi + 1)))

    def value(self, depth: int = 0) -> Any:
        r = self.rng
        k = int(r.integers(0, 9 if depth < 3 else 7))
        if k == 0:
            return None
        if k == 1:
            return bool(r.integers(0, 2))
        if k == 2:
            return int(r.integers(-2**63, 2**63)) >> int(r.integers(0, 63))
        if k == 3:
            return [0, -1, 2**63, 2**64 - 1, -2**63, 2**32][int(r.integers(0, 6))]
        if k == 4:
            return float(r.choice([r.normal() * 1e6, np.inf, -np.inf, np.nan, 0.0]))
        if k == 5:
            return "".join(chr(int(c)) for c in r.integers(32, 0x3000, int(r.integers(0, 12))))
        if k == 6:
            return self._bytes(16)
        if k == 7:
            return [self.value(depth + 1) for _ in range(int(r.integers(0, 5)))]
        return {self.value(3) if r.random() < 0.2 else f"k{int(r.integers(0, 9))}":
                self.value(depth + 1) for _ in range(int(r.integers(0, 5)))}

    def pack(self, value: Any) -> bytes:
        try:
            return msgpack.packb(value, use_bin_type=True)
        except (TypeError, ValueError, OverflowError):  # an unhashable or unpackable draw
            return msgpack.packb(repr(value))

    def gen_bytes(self) -> list[bytes]:
        return [self._bytes(600) for _ in range(int(self.rng.integers(1, 6)))]

    def gen_msgpack(self) -> list[bytes]:
        value = self.value()
        if self.rng.random() < 0.5:  # a header-shaped map: past the magic and version checks
            kinds = sorted(P.SCHEMAS)
            value = {"magic": P.MAGIC, "v": P.PROTOCOL_VERSION,
                     "kind": kinds[int(self.rng.integers(0, len(kinds)))],
                     **{k: self.value(1) for k in ("actor", "env", "seq", "version", "arrays",
                                                    "meta") if self.rng.random() < 0.9}}
        return [self.pack(value), *[self._bytes(200) for _ in range(int(self.rng.integers(0, 4)))]]

    def gen_mutated(self) -> list[bytes]:
        r = self.rng
        frames = list(self.valid[int(r.integers(0, len(self.valid)))])
        header = msgpack.unpackb(frames[0])
        raw_flip = False
        for _ in range(int(r.integers(1, 4))):
            edit = int(r.integers(0, 7))
            if edit == 0:
                header[str(r.choice(sorted(header) + ["extra"]))] = self.value()
            elif edit == 1 and header:
                header.pop(str(r.choice(sorted(header))))
            elif edit == 2 and isinstance(header.get("arrays"), list) and header["arrays"]:
                spec = header["arrays"][int(r.integers(0, len(header["arrays"])))]
                if isinstance(spec, list) and spec:
                    spec[int(r.integers(0, len(spec)))] = self.value() if r.random() < 0.5 else \
                        [int(d) for d in r.integers(-2, 2**34, int(r.integers(0, 7)))]
            elif edit == 3 and isinstance(header.get("meta"), dict) and header["meta"]:
                header["meta"][str(r.choice(sorted(map(str, header["meta"]))))] = self.value()
            elif edit == 4 and len(frames) > 1:
                i = int(r.integers(1, len(frames)))
                cut = int(r.integers(-16, 17))
                frames[i] = frames[i][:cut] if cut < 0 else frames[i] + self.rng.bytes(cut)
            elif edit == 5:
                i = int(r.integers(1, len(frames) + 1))
                if r.random() < 0.5 and len(frames) > 1:
                    frames.pop(min(i, len(frames) - 1))
                else:
                    frames.insert(i, frames[int(r.integers(0, len(frames)))])
            else:
                raw_flip = True
        head = self.pack(header)
        if raw_flip and head:
            buf = bytearray(head)
            for _ in range(int(r.integers(1, 4))):
                buf[int(r.integers(0, len(buf)))] = int(r.integers(0, 256))
            head = bytes(buf)
        return [head, *frames[1:]]


def outcome(frames: list[bytes]) -> str:
    try:
        msg = P.decode(frames, CAP)
    except P.ProtocolError as e:
        return f"rejected_{e.reason}"
    except Exception as e:  # noqa: BLE001 - exactly what this benchmark looks for
        return f"bad_{type(e).__name__}"
    try:
        again = P.decode([bytes(f) for f in P.encode(msg)], CAP)
        same = ((again.kind, again.actor, again.env, again.seq, again.version, again.meta)
                == (msg.kind, msg.actor, msg.env, msg.seq, msg.version, msg.meta)
                and again.arrays.keys() == msg.arrays.keys()
                and all(np.array_equal(again.arrays[k], a, equal_nan=a.dtype.kind == "f")
                        for k, a in msg.arrays.items()))
    except Exception as e:  # noqa: BLE001
        return f"bad_roundtrip_{type(e).__name__}"
    return "accepted" if same else "bad_roundtrip"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--machine-shared", action="store_true",
                    help="mark the row: other jobs were using the cores")
    ap.add_argument("--no-record", action="store_true", help="print only")
    args = ap.parse_args()
    inputs = Inputs(args.seed)
    gens: dict[str, Callable[[], list[bytes]]] = {
        "bytes": inputs.gen_bytes, "msgpack": inputs.gen_msgpack, "mutated": inputs.gen_mutated}
    counts: dict[str, Counter] = {name: Counter() for name in gens}
    bad: list[dict] = []
    start = time.monotonic()
    deadline, n = start + args.seconds, 0
    while time.monotonic() < deadline:
        for _ in range(64):
            for name, gen in gens.items():
                frames = gen()
                result = outcome(frames)
                counts[name][result] += 1
                n += 1
                if result.startswith("bad") and len(bad) < KEEP_BAD:
                    bad.append({"generator": name, "outcome": result,
                                "frames_hex": [f[:256].hex() for f in frames]})
    elapsed = time.monotonic() - start
    total = sum(counts.values(), Counter())
    n_bad = sum(v for k, v in total.items() if k.startswith("bad"))
    print(f"{n} inputs in {elapsed:.0f} s ({n / elapsed:.0f}/s), seed {args.seed}: "
          f"{total['accepted']} accepted, {n_bad} bad")
    for name, c in counts.items():
        print(f"  {name:>8}: " + ", ".join(f"{k} {v}" for k, v in c.most_common()))
    if args.no_record:
        return
    row = {**provenance(), "bench": "fuzz_decode",
           "settings": {"seconds": args.seconds, "seed": args.seed, "max_bytes": CAP,
                        "machine_shared": args.machine_shared},
           "inputs": n, "elapsed_s": elapsed, "inputs_per_s": n / elapsed, "bad": n_bad,
           "property_held": n_bad == 0, "outcomes": dict(total),
           "by_generator": {k: dict(v) for k, v in counts.items()}, "bad_examples": bad}
    append_row(RESULTS, row)


if __name__ == "__main__":
    main()
