"""Learner updates/s: a plain synchronous PyTorch SAC loop vs our Trainer, same networks, same run.

(a) plain: what naive code does: sample indices from a tensor replay of stacked observations,
    index + blocking copy to the device, encode obs and next_obs separately, forward / backward /
    step, and `.item()` of the losses every update (a host-device sync per update).
(b) trainer: `learner.trainer.Trainer` over `learner.replay.Replay` (frames stored once, stacks
    rebuilt at sample time, pinned staging and side-stream prefetch on CUDA) and `fpac_async.sac.SAC`
    (frame sharing, fused Adam on CUDA, one sync per `train` call).

Defaults are the paper's networks (Table I: 84x84 frames, K=32 points, 2x1024 MLPs, batch 128).
Prints a table and appends one JSON line per (device, variant) to bench/results/learner.jsonl.

    python bench/bench_learner.py                       # cpu (few updates), and cuda if present
    python bench/bench_learner.py --device cuda --updates 1000
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.provenance import provenance  # noqa: E402
from fpac_async.config import AgentConfig, ReplayConfig  # noqa: E402
from fpac_async.encoders import make_encoder  # noqa: E402
from fpac_async.networks import Actor, TwinCritic  # noqa: E402
from fpac_async.sac import SAC  # noqa: E402
from learner.replay import Replay  # noqa: E402
from learner.trainer import Trainer  # noqa: E402

ACTION_DIM = 6  # walker/cheetah size


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------ (a) the plain loop
class PlainSAC:
    """Textbook SAC step with the same encoder/actor/critic modules, written the naive way."""

    def __init__(self, cfg: AgentConfig, obs_shape: tuple, device: torch.device):
        self.cfg, self.device = cfg, device
        self.encoder = make_encoder(cfg, obs_shape).to(device)
        f = self.encoder.out_dim
        self.actor = Actor(f, ACTION_DIM, cfg.hidden_dim, cfg.hidden_layers,
                           cfg.log_std_min, cfg.log_std_max).to(device)
        self.critic = TwinCritic(f, ACTION_DIM, cfg.hidden_dim, cfg.hidden_layers).to(device)
        self.target_encoder = copy.deepcopy(self.encoder)
        self.critic_target = copy.deepcopy(self.critic)
        self.log_alpha = torch.tensor(math.log(cfg.init_temperature), device=device,
                                      requires_grad=True)
        self.critic_opt = torch.optim.Adam(
            list(self.encoder.parameters()) + list(self.critic.parameters()), lr=cfg.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.lr)
        self.step = 0

    def update(self, obs, action, reward, discount, next_obs) -> float:
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_feat = self.encoder(next_obs)
            next_action, next_logp = self.actor.sample(next_feat)
            tq = self.critic_target(self.target_encoder(next_obs), next_action).min(0).values
            target = reward + self.cfg.gamma * discount * (tq - alpha * next_logp)
        feat = self.encoder(obs)
        q = self.critic(feat, action)
        critic_loss = F.mse_loss(q[0], target) + F.mse_loss(q[1], target)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        losses = [critic_loss.item()]
        if self.step % self.cfg.actor_update_every == 0:
            a, logp = self.actor.sample(feat.detach())
            actor_loss = (alpha * logp - self.critic(feat.detach(), a).min(0).values).mean()
            self.actor_opt.zero_grad()
            actor_loss.backward()
            self.actor_opt.step()
            alpha_loss = (self.log_alpha.exp() * (-logp.detach() + ACTION_DIM)).mean()
            self.alpha_opt.zero_grad()
            alpha_loss.backward()
            self.alpha_opt.step()
            losses += [actor_loss.item(), alpha_loss.item()]
        if self.step % self.cfg.target_update_every == 0:
            with torch.no_grad():
                for net, tgt in ((self.encoder, self.target_encoder),
                                 (self.critic, self.critic_target)):
                    for p, tp in zip(net.parameters(), tgt.parameters()):
                        tp.data.lerp_(p.data, self.cfg.tau)
        self.step += 1
        return sum(losses)


def bench_plain(cfg: AgentConfig, size: int, device: torch.device, updates: int, warmup: int,
                capacity: int) -> float:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    obs = torch.randint(0, 256, (capacity, 6, size, size), dtype=torch.uint8, generator=g)
    next_obs = torch.randint(0, 256, (capacity, 6, size, size), dtype=torch.uint8, generator=g)
    action = torch.rand(capacity, ACTION_DIM, generator=g) * 2 - 1
    reward, discount = torch.rand(capacity, generator=g), torch.ones(capacity)
    sac = PlainSAC(cfg, (6, size, size), device)

    def one() -> None:
        i = torch.randint(0, capacity, (cfg.batch_size,))
        sac.update(obs[i].to(device), action[i].to(device), reward[i].to(device),
                   discount[i].to(device), next_obs[i].to(device))

    for _ in range(warmup):
        one()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(updates):
        one()
    _sync(device)
    return updates / (time.perf_counter() - t0)


# ---------------------------------------------------------------- (b) our Trainer
def bench_trainer(cfg: AgentConfig, size: int, device: torch.device, updates: int, warmup: int,
                  capacity: int, amp: bool) -> float:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    replay = Replay(capacity, (3, size, size), ACTION_DIM, device=device,
                    batch_size=cfg.batch_size, seed=0)
    chunk = min(capacity, 500)
    for start in range(0, capacity, chunk):
        t = min(chunk, capacity - start)
        flags = np.zeros(t, np.uint8)
        if start == 0:
            flags[0] = 1  # FIRST
        replay.add((0, 0), start, rng.integers(0, 256, (t, 3, size, size), dtype=np.uint8),
                   rng.uniform(-1, 1, (t, ACTION_DIM)).astype(np.float32),
                   rng.normal(size=t).astype(np.float32), flags)
    sac = SAC(cfg, (6, size, size), ACTION_DIM, device=device, amp=amp)
    trainer = Trainer(sac, replay, cfg, ReplayConfig(initial_random_steps=0, replay_ratio=1.0),
                      batch_size=cfg.batch_size, device=device)
    trainer.train(agent_steps=warmup, env_steps=0, max_updates=warmup)
    _sync(device)
    t0 = time.perf_counter()
    done = 0
    while done < updates:  # chunks of 64, as the service loop calls it
        out = trainer.train(agent_steps=warmup + updates, env_steps=0, max_updates=64)
        assert out is not None
        done += int(out["updates_run"])
    _sync(device)
    return updates / (time.perf_counter() - t0)


# ------------------------------------------------------------------------- reporting
def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return provenance()["machine"]["cpu"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="all", help="cpu, cuda, or all (cpu + cuda if present)")
    p.add_argument("--updates", type=int, default=0, help="timed updates (0: cpu 5, cuda 500)")
    p.add_argument("--warmup", type=int, default=0, help="untimed updates (0: cpu 1, cuda 20)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=84)
    p.add_argument("--num-points", type=int, default=32)
    p.add_argument("--hidden-dim", type=int, default=1024)
    p.add_argument("--capacity", type=int, default=2000, help="transitions in each replay")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast in our SAC (CUDA only)")
    p.add_argument("--note", default="", help="free text stored with the results")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "learner.jsonl"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [torch.device(n) for n in names if n != "cuda" or torch.cuda.is_available()]
    cfg = AgentConfig(num_points=args.num_points, hidden_dim=args.hidden_dim,
                      batch_size=args.batch_size)
    base = {"bench": "learner_updates_per_s", **provenance(),
            "batch_size": args.batch_size, "image_size": args.image_size,
            "num_points": args.num_points, "hidden_dim": args.hidden_dim,
            "threads": torch.get_num_threads(), "note": args.note}
    print(f"{'device':<8}{'variant':<10}{'updates':>8}{'updates/s':>12}  device name")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    for device in devices:
        cuda = device.type == "cuda"
        updates = args.updates or (500 if cuda else 5)
        warmup = args.warmup or (20 if cuda else 1)
        runs = {"plain": lambda: bench_plain(cfg, args.image_size, device, updates, warmup,
                                             args.capacity),
                "trainer": lambda: bench_trainer(cfg, args.image_size, device, updates, warmup,
                                                 args.capacity, args.amp)}
        results = {}
        for variant, fn in runs.items():
            results[variant] = ups = fn()
            row = {**base, "device": device.type, "device_name": _device_name(device),
                   "variant": variant, "updates": updates, "warmup": warmup,
                   "amp": bool(args.amp and cuda and variant == "trainer"),
                   "updates_per_s": round(ups, 4), "load_avg_1m": os.getloadavg()[0]}
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{device.type:<8}{variant:<10}{updates:>8}{ups:>12.3f}  {row['device_name']}")
        print(f"{device.type:<8}{'speedup':<10}{'':>8}{results['trainer'] / results['plain']:>11.2f}x")


if __name__ == "__main__":
    main()
