"""The baseline of bench_learner.py: the SAME networks and settings as fpac_async.agent.sac.SAC, trained
the plain synchronous PyTorch way.

Same: the encoder, actor and twin critic modules built from the same AgentConfig (heads, init,
log-std bound), a target encoder only with cfg.target_encoder (the authors' default has none),
the temperature loss on log alpha, the actor and target steps every k updates, Adam at cfg.lr.
Plain: a tensor replay of stacked observations on the host (not pinned), index + blocking copy
to the device per update, obs and next_obs encoded separately (4 frame passes, no frame
sharing), PyTorch's default Adam, a Python loop over the parameters for the Polyak step, and
`.item()` of the losses every update (a host-device sync per update).
"""
from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn.functional as F

from fpac_async.config import AgentConfig
from fpac_async.agent.encoders import make_encoder
from fpac_async.agent.networks import Actor, TwinCritic


class PlainSAC:
    def __init__(self, cfg: AgentConfig, obs_shape: tuple, action_dim: int,
                 device: torch.device):
        self.cfg, self.device = cfg, device
        self.encoder = make_encoder(cfg, obs_shape).to(device)
        f = int(self.encoder.out_dim)
        head = int(cfg.pixels_feature_dim) if cfg.encoder == "pixels" else 0
        self.actor = Actor(f, action_dim, cfg.hidden_dim, cfg.hidden_layers, cfg.log_std_min,
                           cfg.log_std_max, cfg.log_std_bound, head_dim=head,
                           init=cfg.mlp_init, tanh_log_prob=cfg.tanh_log_prob).to(device)
        self.critic = TwinCritic(f, action_dim, cfg.hidden_dim, cfg.hidden_layers,
                                 head_dim=head, init=cfg.mlp_init).to(device)
        self.target_encoder = copy.deepcopy(self.encoder) if cfg.target_encoder else None
        self.critic_target = copy.deepcopy(self.critic)
        self.log_alpha = torch.tensor(math.log(cfg.init_temperature), device=device,
                                      requires_grad=True)
        self.target_entropy = (float(cfg.target_entropy) if cfg.target_entropy is not None
                               else -float(action_dim))
        self.critic_opt = torch.optim.Adam(
            list(self.encoder.parameters()) + list(self.critic.parameters()), lr=cfg.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.lr)
        self.step = 0

    def update(self, obs, action, reward, discount, next_obs) -> float:
        cfg = self.cfg
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_feat = self.encoder(next_obs)
            next_action, next_logp = self.actor.sample(next_feat)
            target_feat = next_feat if self.target_encoder is None \
                else self.target_encoder(next_obs)
            tq = self.critic_target(target_feat, next_action).min(0).values
            target = reward + cfg.gamma * discount * (tq - alpha * next_logp)
        feat = self.encoder(obs)
        q = self.critic(feat, action)
        critic_loss = F.mse_loss(q[0], target) + F.mse_loss(q[1], target)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        losses = [critic_loss.item()]
        if self.step % cfg.actor_update_every == 0:
            if cfg.actor_features == "recompute":  # the authors: encode s again after the step
                with torch.no_grad():
                    feat = self.encoder(obs)
            a, logp = self.actor.sample(feat.detach())
            actor_loss = (alpha * logp - self.critic(feat.detach(), a).min(0).values).mean()
            alpha_loss = (self.log_alpha * (-logp.detach() - self.target_entropy)).mean()
            self.actor_opt.zero_grad()
            self.alpha_opt.zero_grad()
            (actor_loss + alpha_loss).backward()
            self.actor_opt.step()
            self.alpha_opt.step()
            losses += [actor_loss.item(), alpha_loss.item()]
        if self.step % cfg.target_update_every == 0:
            with torch.no_grad():
                pairs = [(self.critic, self.critic_target)]
                if self.target_encoder is not None:
                    pairs.append((self.encoder, self.target_encoder))
                for net, tgt in pairs:
                    for p, tp in zip(net.parameters(), tgt.parameters()):
                        tp.lerp_(p, cfg.tau)
        self.step += 1
        return sum(losses)


def bench_plain(cfg: AgentConfig, size: int, action_dim: int, device: torch.device,
                updates: int, warmup: int, repeats: int, capacity: int) -> tuple[list, float]:
    """(updates/s of each timed block, warm-up seconds) of the plain loop on random data."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    obs = torch.randint(0, 256, (capacity, 6, size, size), dtype=torch.uint8, generator=g)
    next_obs = torch.randint(0, 256, (capacity, 6, size, size), dtype=torch.uint8, generator=g)
    action = torch.rand(capacity, action_dim, generator=g) * 2 - 1
    reward, discount = torch.rand(capacity, generator=g), torch.ones(capacity)
    sac = PlainSAC(cfg, (6, size, size), action_dim, device)

    def one() -> None:
        i = torch.randint(0, capacity, (cfg.batch_size,))
        sac.update(obs[i].to(device), action[i].to(device), reward[i].to(device),
                   discount[i].to(device), next_obs[i].to(device))

    t0 = time.perf_counter()
    for _ in range(warmup):
        one()
    warmup_s = time.perf_counter() - t0
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(updates):
            one()  # .item() syncs every update: no final synchronize needed
        rates.append(updates / (time.perf_counter() - t0))
    return rates, warmup_s
