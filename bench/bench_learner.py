"""Learner updates/s, side by side in one run: the plain synchronous PyTorch loop (bench/plain_sac.py,
same networks and settings) vs our Trainer + Replay + SAC in each speed setting (docs/GPU.md).

Variants (each is the eager Trainer path with the listed changes; those that need CUDA are
skipped on the CPU): plain, eager, cudagraphs, best (cudagraphs + TF32 + GPU replay), tf32,
gpu_replay, channels_last, no_fused_adam, amp (bf16 autocast, CUDA or CPU), compile,
compile_cudagraphs, amp_channels_last, compile_amp, compile_channels_last, and default (every
setting at auto: what the learner runs on this device). The
variants run in this order and each row is written as soon as it is measured, so a run cut
short by a timeout keeps the rows it finished. A variant that fails writes a row with its error.

Each row: updates/s of every timed block (median, min, max over --repeats), the warm-up time
(compile / capture included), the speed-up over the plain loop, provenance and settings. All
variants but those with TF32 run in full float32 (TF32 off for matmuls and cuDNN convs).
Defaults are the paper's networks as the authors' code builds them (84x84 frames, K=32 points,
3x1024 MLPs with their init, batch 128; AgentConfig's defaults).

    python bench/bench_learner.py --device cuda                 # all variants, paper networks
    python bench/bench_learner.py --device cpu --variants plain,eager,compile --updates 5
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
import traceback

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.plain_sac import bench_plain  # noqa: E402
from bench.provenance import provenance  # noqa: E402
from fpac_async.config import AgentConfig, LearnerConfig, ReplayConfig  # noqa: E402
from fpac_async.agent.sac import SAC  # noqa: E402
from fpac_async.agent.speed import Speed, apply_tf32, resolve_speed  # noqa: E402
from learner.replay import Replay  # noqa: E402
from learner.trainer import Trainer  # noqa: E402

ACTION_DIM = 6  # walker/cheetah size
OFF = {"compile": "none", "tf32": "off", "amp": "off", "channels_last": "off"}
VARIANTS = {  # name -> (speed settings over OFF, replay on the GPU)
    "plain": None,
    "eager": ({}, False),
    "cudagraphs": ({"compile": "cudagraphs"}, False),
    "best": ({"compile": "cudagraphs", "tf32": "on"}, True),
    "tf32": ({"tf32": "on"}, False),
    "gpu_replay": ({}, True),
    "channels_last": ({"channels_last": "on"}, False),
    "no_fused_adam": ({"fused_adam": "off"}, False),
    "amp": ({"amp": "on"}, False),
    "compile": ({"compile": "compile"}, False),
    "compile_cudagraphs": ({"compile": "compile-cudagraphs"}, False),
    "amp_channels_last": ({"amp": "on", "channels_last": "on"}, False),
    "compile_amp": ({"compile": "compile", "amp": "on"}, False),
    "compile_channels_last": ({"compile": "compile", "channels_last": "on"}, False),
    # What `auto` resolves to on the device (fpac_async/agent/speed.py): the learner's default path.
    "default": ({k: "auto" for k in ("compile", "tf32", "amp", "channels_last", "fused_adam")},
                False),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def filled_replay(cfg: AgentConfig, size: int, device: torch.device, capacity: int,
                  on_gpu: bool) -> Replay:
    rng = np.random.default_rng(0)
    replay = Replay(capacity, (3, size, size), ACTION_DIM, device=device, on_gpu=on_gpu,
                    batch_size=cfg.batch_size, seed=0)
    chunk = min(capacity, 500)
    for start in range(0, capacity, chunk):
        t = min(chunk, capacity - start)
        flags = np.zeros(t, np.uint8)
        flags[0] = 1 if start == 0 else 0  # FIRST
        replay.add((0, 0), start, rng.integers(0, 256, (t, 3, size, size), dtype=np.uint8),
                   rng.uniform(-1, 1, (t, ACTION_DIM)).astype(np.float32),
                   rng.normal(size=t).astype(np.float32), flags)
    return replay


def bench_trainer(cfg: AgentConfig, size: int, device: torch.device, speed: Speed, on_gpu: bool,
                  updates: int, warmup: int, repeats: int, capacity: int) -> tuple[list, float]:
    """(updates/s of each timed block, warm-up seconds) of Trainer + Replay + SAC."""
    torch.manual_seed(0)
    apply_tf32(speed.tf32)
    replay = filled_replay(cfg, size, device, capacity, on_gpu)
    sac = SAC(cfg, (6, size, size), ACTION_DIM, device=device, **speed.sac_kwargs())
    trainer = Trainer(sac, replay, cfg, ReplayConfig(initial_random_steps=0, replay_ratio=1.0),
                      batch_size=cfg.batch_size, device=device)
    owed = warmup + updates * repeats
    t0 = time.perf_counter()
    trainer.train(agent_steps=owed, env_steps=0, max_updates=warmup)
    _sync(device)
    warmup_s = time.perf_counter() - t0
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = 0
        while done < updates:  # chunks of at most 64, as the service loop calls it
            out = trainer.train(agent_steps=owed, env_steps=0, max_updates=min(64, updates - done))
            assert out is not None
            done += int(out["updates_run"])
        _sync(device)
        rates.append(updates / (time.perf_counter() - t0))
    return rates, warmup_s


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return provenance()["machine"]["cpu"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list (module docstring)")
    p.add_argument("--updates", type=int, default=0, help="updates per timed block (0: cpu 5, cuda 300)")
    p.add_argument("--repeats", type=int, default=3, help="timed blocks per variant")
    p.add_argument("--warmup", type=int, default=0, help="untimed updates (0: cpu 2, cuda 30)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=84)
    p.add_argument("--num-points", type=int, default=32)
    p.add_argument("--hidden-dim", type=int, default=1024)
    p.add_argument("--conv-channels", type=int, default=32)
    p.add_argument("--capacity", type=int, default=2000, help="transitions in each replay")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--machine-shared", action="store_true",
                   help="other jobs ran on this machine (marks the rows as contended)")
    p.add_argument("--note", default="", help="free text stored with the results")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "learner.jsonl"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    cuda = device.type == "cuda"
    updates = args.updates or (300 if cuda else 5)
    warmup = args.warmup or (30 if cuda else 2)
    cfg = AgentConfig(num_points=args.num_points, hidden_dim=args.hidden_dim,
                      conv_channels=args.conv_channels, batch_size=args.batch_size)
    base = {"bench": "learner_updates_per_s", **provenance(), "device": device.type,
            "device_name": _device_name(device), "batch_size": args.batch_size,
            "image_size": args.image_size, "num_points": args.num_points,
            "hidden_dim": args.hidden_dim, "conv_channels": args.conv_channels,
            "threads": torch.get_num_threads(), "updates": updates, "warmup": warmup,
            "repeats": args.repeats, "note": args.note,
            "settings": {"machine_shared": bool(args.machine_shared),
                         "agent": dataclasses.asdict(cfg)}}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    print(f"{'variant':<20}{'updates/s (median [min, max])':>32}{'warm-up s':>11}{'x plain':>9}")
    plain = None
    apply_tf32(False)  # every variant but those with tf32 on runs in full float32
    for name in names:
        row = {**base, "variant": name, "speed": None, "replay_on_gpu": False}
        speed, on_gpu = None, False
        if VARIANTS[name] is not None:
            overrides, on_gpu = VARIANTS[name]
            try:
                if on_gpu and not cuda:
                    raise ValueError("the GPU replay needs a CUDA device")
                speed = resolve_speed(dataclasses.replace(LearnerConfig(), **{**OFF, **overrides}),
                                      device)
            except ValueError as e:  # needs CUDA: not applicable here
                print(f"{name:<20}  skipped: {e}")
                continue
            row.update(speed=dataclasses.asdict(speed), replay_on_gpu=on_gpu)
        try:
            if speed is None:
                rates, warm = bench_plain(cfg, args.image_size, ACTION_DIM, device, updates,
                                          warmup, args.repeats, args.capacity)
            else:
                rates, warm = bench_trainer(cfg, args.image_size, device, speed, on_gpu, updates,
                                            warmup, args.repeats, args.capacity)
        except Exception as e:  # noqa: BLE001 - one failing variant must not end the table
            traceback.print_exc()
            row.update(error=f"{type(e).__name__}: {e}"[:500], load_avg_1m=os.getloadavg()[0])
            _write(args.out, row)
            print(f"{name:<20}  FAILED: {row['error']}")
            continue
        finally:
            apply_tf32(False)
        med = statistics.median(rates)
        plain = med if name == "plain" else plain
        row.update(updates_per_s=round(med, 3), updates_per_s_min=round(min(rates), 3),
                   updates_per_s_max=round(max(rates), 3),
                   updates_per_s_all=[round(r, 3) for r in rates], warmup_s=round(warm, 2),
                   speedup_vs_plain=round(med / plain, 3) if plain else None,
                   load_avg_1m=os.getloadavg()[0])
        _write(args.out, row)
        x = f"{med / plain:.2f}x" if plain else "-"
        print(f"{name:<20}{med:>14.2f} [{min(rates):.2f}, {max(rates):.2f}]{'':>4}"
              f"{warm:>11.1f}{x:>9}", flush=True)


def _write(path: str, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
