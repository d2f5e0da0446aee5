"""Transport throughput with CurveZMQ off and on, side by side in one run (interleaved repeats).

The same measurement as bench/bench_transport.py's "protocol" mode (StreamSender -> PUSH -> PULL ->
protocol.decode, one sender process, loopback), once in plain TCP and once with CURVE: the sender
a CURVE client with an actor key, the PULL a CURVE server whose ZAP handler checks that key
(learner.auth_guard), as `--auth DIR` runs it. Keys are made in a temporary directory.
Writes one row to bench/results/transport_curve.jsonl with bench/provenance.py's fields.

    .venv/bin/python bench/bench_curve.py --seconds 3 --repeats 3    # about 40 s
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.bench_transport import measure  # noqa: E402
from bench.provenance import append_row, provenance  # noqa: E402
from deploy.keys_cli import create_keys  # noqa: E402

RESULTS = os.path.join(ROOT, "bench", "results", "transport_curve.jsonl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per run")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs per setting")
    ap.add_argument("--image-size", type=int, default=84)
    ap.add_argument("--steps-per-message", type=int, default=16)
    ap.add_argument("--port", type=int, default=47411)
    ap.add_argument("--machine-shared", action="store_true",
                    help="mark the row: other jobs were using the cores")
    ap.add_argument("--no-record", action="store_true", help="print only")
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"curve_off": [], "curve_on": []}
    with tempfile.TemporaryDirectory() as keys_dir:
        create_keys(keys_dir, actors=1)
        for k in range(args.repeats):  # interleaved: drifting load hits both settings
            for i, name in enumerate(runs):
                runs[name].append(measure("protocol", args.seconds, args.image_size,
                                          args.steps_per_message, args.port + 2 * k + i,
                                          keys_dir if name == "curve_on" else None))
    summary = {}
    for name, rs in runs.items():
        tps = [r["transitions_per_s"] for r in rs]
        mbs = [r["MB_per_s"] for r in rs]
        summary[name] = {"transitions_per_s_median": statistics.median(tps),
                         "transitions_per_s_min": min(tps), "transitions_per_s_max": max(tps),
                         "MB_per_s_median": statistics.median(mbs),
                         "sender_cpu_us_per_msg_median": statistics.median(
                             r["sender_cpu_us_per_msg"] for r in rs),
                         "receiver_cpu_us_per_msg_median": statistics.median(
                             r["receiver_cpu_us_per_msg"] for r in rs)}
    ratio = (summary["curve_on"]["transitions_per_s_median"]
             / summary["curve_off"]["transitions_per_s_median"])
    print(f"{'setting':>10} {'transitions/s (median [min, max])':>36} {'MB/s':>8} "
          f"{'CPU us/msg: sender':>19} {'receiver':>9}")
    for name, s in summary.items():
        spread = (f"{s['transitions_per_s_median']:.0f} [{s['transitions_per_s_min']:.0f}, "
                  f"{s['transitions_per_s_max']:.0f}]")
        print(f"{name:>10} {spread:>36} {s['MB_per_s_median']:>8.1f} "
              f"{s['sender_cpu_us_per_msg_median']:>19.0f} "
              f"{s['receiver_cpu_us_per_msg_median']:>9.0f}")
    print(f"curve_on / curve_off = {ratio:.2f} (medians of {args.repeats})")
    if args.no_record:
        return
    row = {**provenance(), "bench": "transport_curve",
           "settings": {"seconds": args.seconds, "repeats": args.repeats,
                        "image_size": args.image_size, "steps_per_message": args.steps_per_message,
                        "machine_shared": args.machine_shared},
           "summary": summary, "ratio_on_off": ratio, "runs": runs}
    append_row(RESULTS, row)


if __name__ == "__main__":
    main()
