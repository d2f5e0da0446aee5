"""fpac-pretrain: collect frames with a random policy, train the feature-point autoencoder, save it.

The first half of the SAC-from-pretrained-feature-points baseline (paper section V, Fig. 2:
"a self-supervised feature points encoder from 10k images collected using a random policy",
trained "similarly to [11] by minimizing the reconstruction loss"); fpac_async/agent/pretrained_points.py
has the model. Then train SAC on its frozen points with the same task flags:

    fpac-pretrain --task cartpole_swingup --out runs/pre/cartpole.pt
    fpac-train --task cartpole_swingup --encoder pretrained --pretrained runs/pre/cartpole.pt

Frames are the env's own renders (make_vec_env: the same backend, camera, image size and render
quality as training), one per agent step, episode starts included, uniform random actions. Task,
env and encoder-architecture flags (--num-points, --conv-channels, --softmax, --fp-temperature)
and the task defaults are those of fpac-train. Exit code 0 done, 2 bad flags.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Callable, List, Sequence

import numpy as np
import torch

from fpac_async.cli_parser import FpacParser
from fpac_async.cli_args import add_config_args, run_config
from fpac_async.config import ConfigError, EnvConfig, resolve
from fpac_async.agent.pretrained_points import PointAutoencoder, save_pretrained

log = logging.getLogger("fpac.pretrain")
CONFIG_FLAGS = {f for f in EnvConfig.__dataclass_fields__} | {
    "seed", "num_points", "conv_channels", "softmax", "fp_temperature"}


def collect_frames(env_cfg: EnvConfig, frames: int, seed: int, num_envs: int = 1) -> np.ndarray:
    """uint8 [frames, 3, H, W]: every frame the envs render under uniform random actions."""
    from actors.envs import make_vec_env  # noqa: PLC0415 (dm_control only when collecting)
    if frames < 2:
        raise ConfigError(f"--frames must be >= 2; got {frames}")
    env = make_vec_env(env_cfg, seed, num_envs)
    rng = np.random.default_rng(seed)
    out = np.empty((frames, *env.obs_shape), np.uint8)
    try:
        batch, filled = env.reset(), 0
        while True:
            take = min(len(batch.frames), frames - filled)
            out[filled:filled + take] = batch.frames[:take]
            filled += take
            if filled == frames:
                return out
            batch = env.step(rng.uniform(-1, 1, (num_envs, env.action_dim)).astype(np.float32))
    finally:
        env.close()


def train_autoencoder(model: PointAutoencoder, frames: np.ndarray, updates: int, batch_size: int,
                      lr: float, seed: int, device: str = "cpu",
                      log_every: int = 0, log_line: Callable[[str], None] = print) -> List[float]:
    """Adam on the reconstruction loss; each batch's reference frames are the same batch in a
    random order (the authors' obs_style). Returns the loss of every update."""
    if updates < 1 or batch_size < 2:
        raise ConfigError("--updates must be >= 1 and --batch-size >= 2")
    generator = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(frames)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for update in range(updates):
        idx = torch.randint(len(data), (batch_size,), generator=generator)
        batch = data[idx].to(device)
        reference = batch[torch.randperm(batch_size, generator=generator).to(device)]
        loss = model.loss(batch, reference)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if log_every and (update + 1) % log_every == 0:
            log_line(f"update {update + 1}/{updates}: reconstruction loss "
                     f"{np.mean(losses[-log_every:]):.5f}")
    return losses


def build_parser() -> argparse.ArgumentParser:
    p = FpacParser(prog="fpac-pretrain", description=__doc__,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the file to write (--pretrained PATH later)")
    p.add_argument("--frames", type=int, default=10_000,
                   help="frames to collect with a random policy (paper: 10k)")
    p.add_argument("--updates", type=int, default=10_000, help="autoencoder updates")
    p.add_argument("--batch-size", type=int, default=128, help="frames per update")
    p.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate")
    p.add_argument("--envs", type=int, default=1, help="envs stepped together while collecting")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--log-every", type=int, default=500, help="updates between loss lines")
    add_config_args(p, only=CONFIG_FLAGS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        cfg = resolve(run_config(parser, args, argv))
        if args.frames < 2 or args.updates < 1 or args.batch_size < 2 or args.envs < 1:
            raise ConfigError("--frames >= 2, --updates >= 1, --batch-size >= 2, --envs >= 1")
    except ConfigError as e:
        print(f"fpac-pretrain: {e}", file=sys.stderr)
        return 2
    torch.manual_seed(cfg.seed)
    start = time.time()
    frames = collect_frames(cfg.env, args.frames, cfg.seed, args.envs)
    log.info("collected %d frames of %s in %.1f s", len(frames), cfg.env.task, time.time() - start)
    model = PointAutoencoder(cfg.agent, frames.shape[2:])
    losses = train_autoencoder(model, frames, args.updates, args.batch_size, args.lr, cfg.seed,
                               args.device, args.log_every, log.info)
    meta = {"task": cfg.env.task, "env": json.loads(json.dumps(cfg.env.__dict__)),
            "seed": cfg.seed, "frames": len(frames), "updates": args.updates,
            "batch_size": args.batch_size, "lr": args.lr, "losses": losses}
    save_pretrained(args.out, model.cpu(), cfg.agent, meta)
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    print(f"fpac-pretrain: wrote {args.out} ({cfg.agent.num_points} points, loss {first:.4f} -> "
          f"{last:.4f}, {time.time() - start:.0f} s); train with --encoder pretrained "
          f"--pretrained {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
