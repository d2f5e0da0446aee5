"""Actor and critic heads of the SAC agent (paper section III, Table I; DESIGN.md section 1).

Both are MLPs with cfg.hidden_layers hidden layers of cfg.hidden_dim units and Swish (SiLU)
activations (Table I) on top of the encoder's features.

Choices (documented because the paper does not fix them; docs/FIDELITY.md):
- Initialisation (cfg.mlp_init): 'orthogonal' (default), orthogonal weights and zero biases on
  every linear layer as in SAC-AE and DrQ (`weight_init`); or 'authors', the authors' MLPs
  (utils.MLP): PyTorch's default nn.Linear init, U(+-1/sqrt(fan_in)) for weights and biases,
  with the last layer's weights and bias drawn from U(-3e-3, 3e-3).
- log-std bound (cfg.log_std_bound): 'clamp', the authors' hard clamp to [min, max] (default), or
  'tanh', the SAC-AE/DrQ rescale log_std = min + (max - min) * (tanh(u) + 1) / 2, whose gradient
  never vanishes at the edges.
- SAC from pixels (head_dim > 0): actor and critic each own a Linear + LayerNorm + tanh head on
  the shared conv features (SAC-AE); the actor's sees them detached, so the actor loss trains its
  head and the critic loss trains the critic's head and the convs.
- Twin critic: the two Q networks are one "ensemble" MLP whose weights are stacked [2, in, out] and
  evaluated with one batched matmul per layer (torch.baddbmm): half the kernel launches of two
  separate MLPs, which matters at thousands of updates per second. Each member is initialised
  independently (orthogonal per member).
"""
from __future__ import annotations

import math
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


def orthogonal_init(module: nn.Module) -> None:
    """Orthogonal weights and zero biases for nn.Linear (SAC-AE/DrQ `weight_init`)."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def feature_head(in_dim: int, out_dim: int) -> nn.Module:
    """Linear + LayerNorm + tanh (SAC-AE's encoder head), or Identity when out_dim is 0."""
    if out_dim <= 0:
        return nn.Identity()
    head = nn.Sequential(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim), nn.Tanh())
    head.apply(orthogonal_init)
    return head


MLP_INITS = ("orthogonal", "authors")
TANH_LOG_PROBS = ("authors", "exact")
AUTHORS_LOG_PROB_EPS = 1e-6  # sac.py: log(1 - action**2 + 1e-6)
AUTHORS_LAST_LAYER = 3e-3  # utils.MLP(init_w=3e-3) in the authors' code


def mlp(in_dim: int, hidden_dim: int, out_dim: int, hidden_layers: int,
        init: str = "orthogonal") -> nn.Sequential:
    """in_dim -> hidden_layers x (Linear(hidden_dim), SiLU) -> Linear(out_dim), initialised as
    `init` says (module docstring)."""
    _check_init(init)
    layers: List[nn.Module] = []
    width = in_dim
    for _ in range(hidden_layers):
        layers += [nn.Linear(width, hidden_dim), nn.SiLU()]
        width = hidden_dim
    layers.append(nn.Linear(width, out_dim))
    net = nn.Sequential(*layers)
    if init == "orthogonal":
        net.apply(orthogonal_init)
    else:  # PyTorch's default for the hidden layers (nn.Linear's own), small last layer
        with torch.no_grad():
            net[-1].weight.uniform_(-AUTHORS_LAST_LAYER, AUTHORS_LAST_LAYER)
            net[-1].bias.uniform_(-AUTHORS_LAST_LAYER, AUTHORS_LAST_LAYER)
    return net


def _check_init(init: str) -> None:
    if init not in MLP_INITS:
        raise ValueError(f"mlp init must be one of {', '.join(MLP_INITS)}; got {init!r}")


class Actor(nn.Module):
    """The tanh-Gaussian policy pi(a | s): a = tanh(mu + sigma * eps), eps ~ N(0, I)."""

    def __init__(self, feature_dim: int, action_dim: int, hidden_dim: int, hidden_layers: int,
                 log_std_min: float, log_std_max: float, log_std_bound: str = "clamp",
                 head_dim: int = 0, init: str = "orthogonal", tanh_log_prob: str = "exact"):
        super().__init__()
        if tanh_log_prob not in TANH_LOG_PROBS:
            raise ValueError(f"tanh_log_prob must be one of {', '.join(TANH_LOG_PROBS)}; got "
                             f"{tanh_log_prob!r}")
        self.authors_log_prob = tanh_log_prob == "authors"
        if not log_std_min < log_std_max:
            raise ValueError(f"log_std_min ({log_std_min}) must be < log_std_max ({log_std_max})")
        if log_std_bound not in ("clamp", "tanh"):
            raise ValueError(f"log_std_bound must be 'clamp' or 'tanh'; got {log_std_bound!r}")
        self.action_dim = action_dim
        self.log_std_min = float(log_std_min)
        self.log_std_max = float(log_std_max)
        self.tanh_log_std = log_std_bound == "tanh"
        self.head = feature_head(feature_dim, head_dim)
        self.trunk = mlp(head_dim or feature_dim, hidden_dim, 2 * action_dim, hidden_layers,
                         init)

    def forward(self, features: Tensor) -> Tuple[Tensor, Tensor]:
        """(mean, log_std) of the pre-tanh Gaussian, each [B, A]."""
        mean, raw = self.trunk(self.head(features)).chunk(2, dim=-1)
        if self.tanh_log_std:
            # tanh rescale into [log_std_min, log_std_max] (SAC-AE/DrQ).
            log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (
                torch.tanh(raw) + 1.0)
        else:
            log_std = raw.clamp(self.log_std_min, self.log_std_max)  # the authors' sac.py
        return mean, log_std

    @torch.jit.export
    def act(self, features: Tensor, deterministic: bool) -> Tensor:
        """An action [B, A] in (-1, 1): tanh(mean), or tanh(mean + std * eps) when stochastic."""
        mean, log_std = self.forward(features)
        if deterministic:
            return torch.tanh(mean)
        return torch.tanh(mean + log_std.exp() * torch.randn_like(mean))

    @torch.jit.ignore
    def sample(self, features: Tensor) -> Tuple[Tensor, Tensor]:
        """A reparameterised sample (action [B, A], log pi(action | s) [B]) for the SAC losses.

        log pi(a) = log N(u; mu, sigma) - sum log(1 - tanh(u)^2) (SAC's eq. 21). The
        change-of-variables term: 'authors' (the default), their sac.py's log(1 - tanh(u)^2 +
        1e-6), which stops growing at log 1e-6 once |u| > ~7; 'exact', the stable form
        2 (log 2 - u - softplus(-2u)) (at u = 8 the two differ by 1.2 nats). Computed in float32
        even under bf16 autocast (the log-prob is a small difference of large terms).
        """
        mean, log_std = self.forward(features)
        mean = mean.float()
        log_std = log_std.float()
        eps = torch.randn_like(mean)
        u = mean + log_std.exp() * eps
        action = torch.tanh(u)
        gaussian = -0.5 * eps.pow(2) - log_std - 0.5 * _LOG_2PI
        if self.authors_log_prob:
            squash = torch.log(1.0 - action.pow(2) + AUTHORS_LOG_PROB_EPS)
        else:
            squash = 2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))
        return action, (gaussian - squash).sum(-1)


class EnsembleLinear(nn.Module):
    """`members` independent linear layers applied in one batched matmul: [E, B, in] -> [E, B, out].

    A 2-D input [B, in] is shared by all members (broadcast without a copy).
    """

    def __init__(self, members: int, in_dim: int, out_dim: int, init: str = "orthogonal",
                 bound: float | None = None):
        """init 'orthogonal': orthogonal weights, zero biases, per member; 'authors': weights and
        biases from U(-b, b) with b = `bound`, or nn.Linear's default 1/sqrt(in_dim)."""
        super().__init__()
        _check_init(init)
        self.weight = nn.Parameter(torch.empty(members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(members, 1, out_dim))
        with torch.no_grad():
            if init == "authors":
                b = bound if bound is not None else 1.0 / math.sqrt(in_dim)
                self.weight.uniform_(-b, b)
                self.bias.uniform_(-b, b)
                return
            for e in range(members):
                w = torch.empty(out_dim, in_dim)
                nn.init.orthogonal_(w)  # per member, same law as nn.Linear's orthogonal init
                self.weight[e].copy_(w.t())

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.weight.size(0), -1, -1)
        return torch.baddbmm(self.bias, x, self.weight)


class TwinCritic(nn.Module):
    """Clipped double Q: two Q(s, a) MLPs on [features, action], evaluated together."""

    def __init__(self, feature_dim: int, action_dim: int, hidden_dim: int, hidden_layers: int,
                 num_q: int = 2, head_dim: int = 0, init: str = "orthogonal"):
        super().__init__()
        self.head = feature_head(feature_dim, head_dim)  # one head shared by the num_q members
        layers: List[nn.Module] = []
        width = (head_dim or feature_dim) + action_dim
        for _ in range(hidden_layers):
            layers += [EnsembleLinear(num_q, width, hidden_dim, init), nn.SiLU()]
            width = hidden_dim
        layers.append(EnsembleLinear(num_q, width, 1, init, bound=AUTHORS_LAST_LAYER))
        self.net = nn.Sequential(*layers)
        self.num_q = num_q

    def forward(self, features: Tensor, action: Tensor) -> Tensor:
        """Q values [num_q, B] of (features [B, F], action [B, A])."""
        if features.shape[0] != action.shape[0]:
            raise ValueError(f"features {tuple(features.shape)} and action "
                             f"{tuple(action.shape)} disagree on the batch size")
        features = self.head(features)
        x = torch.cat([features, action.to(features.dtype)], dim=-1)
        return self.net(x).squeeze(-1)
