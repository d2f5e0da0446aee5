"""Benchmark: separable (eq. 3) vs spatial-softmax (eq. 1) vs Listing 1 feature points.

The paper (section VI-D) times both on 128x32x35x35 maps: spatial 2.8 ms, separable 1.1 ms on a
GTX 1080 Ti. We time forward and forward+backward, median of N repeats, on the CPU (and CUDA when
available, with CUDA events after a warm-up), print a table and append one JSON line per
measurement to bench/results/feature_points.jsonl.

    .venv/bin/python bench/bench_feature_points.py --repeats 50 --threads 2
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench.provenance import provenance  # noqa: E402

from fpac_async.agent.feature_points import (listing1_feature_points,
                                             # noqa: E402 separable_feature_points,
                                             spatial_softmax_feature_points)

VARIANTS: Dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "separable": separable_feature_points,
    "spatial": spatial_softmax_feature_points,
    "listing1": listing1_feature_points,
}
DEFAULT_OUT = os.path.join(ROOT, "bench", "results", "feature_points.jsonl")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def machine(device: torch.device) -> dict:
    uname = platform.uname()
    info = {"processor": platform.processor() or uname.machine,
            "uname": f"{uname.system} {uname.release} {uname.machine}",
            "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "loadavg_1m": os.getloadavg()[0],
            "device_name": platform.processor() or uname.machine}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def time_call(fn: Callable[[], object], device: torch.device, repeats: int,
              warmup: int) -> List[float]:
    """Per-call times in ms; CUDA calls are timed with events around each call."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def bench_device(device: torch.device, shape: List[int], repeats: int, warmup: int,
                 temperature: float, rounds: int) -> List[dict]:
    """Every measurement, interleaved over `rounds` rounds so that load from other processes on
    a shared machine falls on all variants alike; median and min over all timed calls."""
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(*shape, generator=gen).to(device)
    # The encoder's maps are channels_last when the actor runs the convs channels-last.
    cl = maps.contiguous(memory_format=torch.channels_last)
    layouts = [("contiguous", maps), ("channels_last", cl)]
    calls = []
    for layout, m in layouts:
        gm = m.clone().requires_grad_()  # clone keeps the memory format
        for name, fn in VARIANTS.items():
            if layout != "contiguous" and name != "separable":
                continue
            out_grad = torch.ones_like(fn(m, temperature))

            def forward(fn=fn, m=m):
                with torch.no_grad():
                    fn(m, temperature)

            def forward_backward(fn=fn, gm=gm, out_grad=out_grad):
                torch.autograd.grad(fn(gm, temperature), gm, out_grad)

            calls.append(((name, "forward", layout), forward))
            calls.append(((name, "forward_backward", layout), forward_backward))
    times: Dict[tuple, List[float]] = {key: [] for key, _ in calls}
    per_round = max(1, repeats // rounds)
    for _ in range(rounds):
        for key, call in calls:
            times[key] += time_call(call, device, per_round, warmup)
    return [{"variant": k[0], "mode": k[1], "layout": k[2], "calls": len(t),
             "median_ms": statistics.median(t), "min_ms": min(t)} for k, t in times.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=50, help="timed calls per measurement (median)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds the repeats split into")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls before each round")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--shape", type=int, nargs=4, default=[128, 32, 35, 35])
    ap.add_argument("--temperature", type=float, default=0.5)
    ap.add_argument("--devices", default="auto", help="'auto', 'cpu', 'cuda' or 'cpu,cuda'")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--note", default="", help="free text stored with each line (e.g. contention)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    names = ["cpu", "cuda"] if args.devices == "auto" else args.devices.split(",")
    devices = [torch.device(n) for n in names if n != "cuda" or torch.cuda.is_available()]
    commit = git_commit()
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()} "
          f"(cpu_count {os.cpu_count()}), shape {args.shape}, repeats {args.repeats}, "
          f"loadavg {os.getloadavg()[0]:.2f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    written = 0
    with open(args.out, "a") as f:
        for device in devices:
            rows = bench_device(device, args.shape, args.repeats, args.warmup, args.temperature,
                                args.rounds)
            info = machine(device)
            print(f"\n{device.type}: {info['device_name']}")
            print(f"{'variant':<11}{'layout':<15}{'mode':<18}{'median ms':>10}{'min ms':>9}")
            for r in rows:
                print(f"{r['variant']:<11}{r['layout']:<15}{r['mode']:<18}"
                      f"{r['median_ms']:>10.3f}{r['min_ms']:>9.3f}")
                f.write(json.dumps({"bench": "feature_points", **r, "device": device.type,
                                    "shape": args.shape, "dtype": "float32",
                                    "temperature": args.temperature, "rounds": args.rounds,
                                    "device_info": info, "git_commit": commit, "date_utc": date,
                                    **provenance(),
                                    "note": args.note}) + "\n")
                written += 1
            med = {(r["variant"], r["mode"], r["layout"]): r["median_ms"] for r in rows}
            for mode in ("forward", "forward_backward"):
                sep = med[("separable", mode, "contiguous")]
                print(f"{mode}: spatial / separable = "
                      f"{med[('spatial', mode, 'contiguous')] / sep:.2f}x, listing1 / separable = "
                      f"{med[('listing1', mode, 'contiguous')] / sep:.2f}x")
    print(f"\nappended {written} lines to {args.out}")


if __name__ == "__main__":
    main()
