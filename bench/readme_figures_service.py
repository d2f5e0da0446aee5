"""The generated table's rows for the service's robustness and the studies (bench/readme_table.py
adds them after the speed figures): CurveZMQ on/off, the decoder fuzz, the soak, the handcrafted
keypoints' accuracy, the tiny experiment grid and the cost of a weights broadcast. Each reads the
newest rows of its results file (bench/result_rows.figure) and never a number typed here.
"""
from __future__ import annotations

from bench.result_rows import Row, figure, speed, spread


def _curve(group: list[Row]) -> str:
    r = group[-1]
    off, on = r["summary"]["curve_off"], r["summary"]["curve_on"]
    tps = lambda s: (f"{s['transitions_per_s_median']:.0f} ({s['transitions_per_s_min']:.0f}-"  # noqa: E731
                     f"{s['transitions_per_s_max']:.0f})")
    text = (f"{tps(off)} / {tps(on)} transitions/s over {r['settings']['repeats']} repeats; "
            f"sender {off['sender_cpu_us_per_msg_median']:.0f} / "
            f"{on['sender_cpu_us_per_msg_median']:.0f} us, receiver "
            f"{off['receiver_cpu_us_per_msg_median']:.0f} / "
            f"{on['receiver_cpu_us_per_msg_median']:.0f} us per message")
    return speed(group, text)


fig_curve = figure(
    "transport_curve.jsonl",
    "transport with CurveZMQ off / on, 84x84, 16 records per message, interleaved in one run: "
    "transitions/s median (range), CPU us per message (`bench_curve.py`)", _curve)


def _fuzz(group: list[Row]) -> str:
    r = group[-1]
    return (f"{r['inputs']:,} inputs in {r['settings']['seconds']:.0f} s (seed "
            f"{r['settings']['seed']}): {r['outcomes'].get('accepted', 0):,} accepted, the rest "
            f"refused; {r['bad']} outside the property")


fig_fuzz = figure(
    "fuzz.jsonl",
    "fuzz of the wire decoder: random bytes, random msgpack headers, mutated valid messages; "
    "each must decode to a valid message or raise ProtocolError (`bench_fuzz.py`)", _fuzz)


def _soak(group: list[Row]) -> str:
    r = group[-1]
    s, m = r["settings"], r["learner_metrics"]
    parts = [f"{name} {p['rss_slope_after_warmup_mb_per_min']:+.2f} MB/min, fds "
             f"{p['fds_min']}-{p['fds_max']}" for name, p in sorted(r["procs"].items())]
    return (f"{r['minutes']:.0f} min, {s['actors']} actors + {s['evaluators']} evaluator, "
            f"{s['task']} on {s['device']}, {m['env_steps']:,} env steps: " + "; ".join(parts))


fig_soak = figure(
    "soak.jsonl",
    "soak: RSS slope after the first 5 minutes and open files of each process (`bench_soak.py`)",
    _soak, keep=lambda r: r.get("kind") == "summary")

fig_keypoints = figure(
    "keypoints.jsonl",
    "handcrafted keypoints (`--state-source keypoints`): share of in-image points whose pixel "
    "shows their own object in a segmentation render / within 2 px (`bench_keypoints.py`)",
    lambda group: "; ".join(f"{r['settings']['domain']} {r['on_own_geom']:.2f} / "
                            f"{r['within_2px']:.2f}" for r in group))


def _experiment(group: list[Row]) -> str:
    r = group[-1]
    cells = []
    for row in r["scores"]["rows"]:
        at = ", ".join(f"at {x}: {v['mean']:.1f} +- {v['std']:.1f}" for x, v in row["at"].items())
        cells.append(f"{row['agent']} ({row['seeds']} seeds): {at}")
    return f"{r['settings']['task']}, {r['settings']['env_steps']} env steps: " + "; ".join(cells)


fig_experiment = figure(
    "experiment.jsonl",
    "`fpac-experiment` grid on the tiny task: eval return mean +- std over seeds "
    "(`bench_experiment.py`, figure below)", _experiment)

def _broadcast(group: list[Row]) -> str:
    """Per network config and wire dtype: the median over the bench's runs (range when repeated)."""
    parts = []
    for key in sorted({(r["config"], r.get("wire", "f32")) for r in group}):
        rows = [r for r in group if (r["config"], r.get("wire", "f32")) == key]
        col = lambda f: spread([f(r) for r in rows])  # noqa: E731
        wire = rows[0]["mb_per_s_per_actor_at_1000_ups"]
        fans = sorted(rows[0]["fanout"], key=int)
        parts.append(
            f"{key[0]}, {key[1]}: {rows[0]['bytes'] / 1e6:.2f} MB, learner "
            f"{col(lambda r: r['learner_cpu_ms'])} ms to publish, actor "
            f"{col(lambda r: r['actor_cpu_ms'])} ms to load; at 1,000 updates/s "
            f"{wire['weights_every_100']:.0f} MB/s per actor (every 100 updates), "
            f"{wire['weights_every_50']:.0f} (every 50); learner process ms per broadcast "
            + " / ".join(col(lambda r, n=n: r["fanout"][n]["learner_cpu_ms"]) for n in fans)
            + f" to {' / '.join(fans)} subscribers")
    return speed(group, "; ".join(parts))


fig_broadcast = figure(
    "broadcast.jsonl", "one weights broadcast: bytes, CPU on both sides, wire rate and fan-out "
    "(`bench_broadcast.py`)", _broadcast, keep=lambda r: "fanout" in r)

SERVICE_FIGURES = [fig_curve, fig_fuzz, fig_soak, fig_keypoints, fig_experiment, fig_broadcast]
