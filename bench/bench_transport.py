"""Transport throughput: actor-like StreamSender -> PULL + protocol.decode, against raw ZeroMQ.

Both runs use one sender process and one receiver process on loopback, the same socket factories
(fpac_async.wire.transport: same high-water marks, same allocator tuning) and messages of the same size;
the raw run sends pre-built frames (zero-copy, its fastest way) and only counts them on arrival.
The protocol run is the actor's real path: StreamSender.add per record -> transport.send_message
(protocol.encode) -> PULL -> protocol.decode. Target: protocol / raw >= 0.8.

CPU per message (process time of all threads, ZeroMQ's IO thread included) is reported for each
side: on a machine with few cores the two processes compete, so this says where time goes.

    .venv/bin/python bench/bench_transport.py --seconds 5 --image-size 84 --steps-per-message 16
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time

import numpy as np
import zmq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench.provenance import provenance  # noqa: E402

from fpac_async.wire import protocol as P  # noqa: E402
from fpac_async.wire.transport import pull_socket, push_socket, send_message  # noqa: E402

RESULTS = os.path.join(ROOT, "bench", "results", "transport.jsonl")


def _sender(endpoint: str, mode: str, seconds: float, image: int, per_msg: int,
            keys_dir: str | None = None) -> None:
    from actors.sender import StreamSender  # noqa: PLC0415
    from fpac_async.wire.auth import load_client_keys  # noqa: PLC0415
    ctx = zmq.Context()
    sock = push_socket(ctx, endpoint,
                       secure=None if keys_dir is None else load_client_keys(keys_dir).apply)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (1, 3, image, image), dtype=np.uint8)
    action = rng.uniform(-1, 1, (1, 1)).astype(np.float32)
    reward, flags = np.ones(1, np.float32), np.zeros(1, np.uint8)
    cam = np.zeros((1, 2), np.float32)
    if mode == "raw":  # the same bytes an encoded chunk has, built once
        chunk = P.steps_message(0, 0, 0, 0, np.repeat(frames, per_msg, 0),
                                np.repeat(action, per_msg, 0), np.ones(per_msg, np.float32),
                                np.zeros(per_msg, np.uint8), np.zeros(per_msg, np.int32),
                                np.zeros((per_msg, 2), np.float32))
        parts = [bytes(f) for f in P.encode(chunk)]
        deadline = time.monotonic() + seconds
        sock.send_multipart(parts, copy=False)  # blocks until connected: CPU counted from here
        messages, cpu0 = 0, time.process_time()
        while time.monotonic() < deadline:
            sock.send_multipart(parts, copy=False)
            messages += 1
    else:
        sender = StreamSender(lambda m: send_message(sock, m), 0, 1, (3, image, image), 1, 0,
                              per_msg)
        deadline = time.monotonic() + seconds
        for _ in range(per_msg):
            sender.add(frames, action, reward, flags, 0, cam)
        messages, cpu0 = 0, time.process_time()
        while time.monotonic() < deadline:
            for _ in range(per_msg):
                sender.add(frames, action, reward, flags, 0, cam)
            messages += 1
    cpu_us = (time.process_time() - cpu0) / max(messages, 1) * 1e6
    sock.send_multipart([b"END", json.dumps({"cpu_us_per_msg": cpu_us}).encode()])
    sock.close(linger=5000)
    ctx.term()


def measure(mode: str, seconds: float, image: int, per_msg: int, port: int,
            keys_dir: str | None = None) -> dict:
    """keys_dir: a fpac-keys directory: CURVE on (encrypted, the sender's key checked by ZAP)."""
    from fpac_async.wire.auth import load_server_keys  # noqa: PLC0415
    from learner.auth_guard import AuthGuard  # noqa: PLC0415
    ctx = zmq.Context()
    guard = AuthGuard(ctx, None if keys_dir is None else load_server_keys(keys_dir))
    pull = pull_socket(ctx, f"tcp://127.0.0.1:{port}", secure=guard.secure)
    proc = mp.get_context("spawn").Process(
        target=_sender, args=(f"tcp://127.0.0.1:{port}", mode, seconds, image, per_msg, keys_dir))
    proc.start()
    records = nbytes = messages = 0
    start = None
    cpu0 = 0.0
    while True:
        frames = pull.recv_multipart(copy=False)
        if len(frames) == 2 and frames[0].bytes == b"END":
            sender_cpu = json.loads(frames[1].bytes)["cpu_us_per_msg"]
            break
        if start is None:  # time from the first arrival: excludes the sender's start-up
            start, cpu0 = time.perf_counter(), time.process_time()
            continue
        messages += 1
        nbytes += sum(len(f) for f in frames)
        if mode == "raw":
            records += per_msg
        else:
            records += len(P.decode(frames).arrays["flags"])
    elapsed = time.perf_counter() - (start or time.perf_counter())
    receiver_cpu = (time.process_time() - cpu0) / max(messages, 1) * 1e6
    proc.join()
    guard.close()
    pull.close(linger=0)
    ctx.term()
    return {"mode": mode, "transitions_per_s": records / elapsed, "MB_per_s": nbytes / elapsed / 1e6,
            "seconds": elapsed, "msg_bytes": nbytes * per_msg // max(records, 1),
            "sender_cpu_us_per_msg": sender_cpu, "receiver_cpu_us_per_msg": receiver_cpu}


def _machine() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                capture_output=True).stdout.strip()
    except OSError:
        commit = ""
    return {"machine": f"{platform.node()} {platform.processor() or platform.machine()} "
                       f"{os.cpu_count()} cpus", "commit": commit,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--image-size", type=int, default=84)
    ap.add_argument("--steps-per-message", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs per mode; "
                    "the median is reported")
    ap.add_argument("--port", type=int, default=47311)
    ap.add_argument("--note", default="", help="e.g. 'cores shared with other jobs'")
    ap.add_argument("--no-record", action="store_true", help=f"print only; do not append to "
                    f"{os.path.relpath(RESULTS, ROOT)}")
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"raw": [], "protocol": []}
    for k in range(args.repeats):  # interleaved, so drifting load on shared cores hits both
        for i, mode in enumerate(runs):
            runs[mode].append(measure(mode, args.seconds, args.image_size,
                                      args.steps_per_message, args.port + 2 * k + i))
    rows = [sorted(r, key=lambda x: x["transitions_per_s"])[len(r) // 2] for r in runs.values()]
    ratio = rows[1]["transitions_per_s"] / rows[0]["transitions_per_s"]  # of the medians
    print(f"{'mode':>9} {'transitions/s':>14} {'MB/s':>9} {'msg bytes':>10} "
          f"{'CPU us/msg: sender':>19} {'receiver':>9}")
    for r in rows:
        print(f"{r['mode']:>9} {r['transitions_per_s']:>14.0f} {r['MB_per_s']:>9.1f} "
              f"{r['msg_bytes']:>10} {r['sender_cpu_us_per_msg']:>19.0f} "
              f"{r['receiver_cpu_us_per_msg']:>9.0f}")
    print(f"protocol / raw = {ratio:.2f} (medians of {args.repeats}; target >= 0.8)")
    entry = {**_machine(), **provenance(), "bench": "transport", "image_size": args.image_size,
             "steps_per_message": args.steps_per_message, "results": rows, "all_runs": runs, "ratio": ratio,
             "note": args.note}
    if args.no_record:
        return
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps(entry) + "\n")


if __name__ == "__main__":
    main()
