"""The SAC learner as a pure compute object (paper section III, Table I; DESIGN.md section 1).

`SAC.update(batch) -> metrics` does one gradient step: no I/O, no logging, and no host-device
sync (metrics are 0-d tensors the caller may read whenever it likes; the update counter is a
Python int). Structure follows SAC-AE / DrQ and the authors' fpac.py:

- encoder (trained by the critic loss only), actor, twin critic and a target critic,
  Polyak-averaged with rate tau every cfg.target_update_every updates;
- TD targets (cfg.target_encoder): by default, as in the authors' code, the target critic reads
  the ONLINE encoder's features of s' (their target encoder is updated but never read), so no
  target encoder exists; with cfg.target_encoder a Polyak-averaged copy of the encoder computes
  them (SAC-AE / DrQ);
- the actor and the temperature see DETACHED features (DESIGN.md: "only the critic loss trains
  the encoder"), and are updated every cfg.actor_update_every updates;
- the actor step reads features of s recomputed by the encoder after the critic step, without
  gradient (cfg.actor_features 'recompute', the authors' fpac.py update_actor_and_alpha), or the
  critic step's features, detached ('reuse', DrQ-v2: one encoder pass less);
- bf16 autocast (amp) on CUDA or a CPU: convs and matmuls in bf16; the feature-point softmax and
  expectations (feature_points.py), the log-prob, the losses, log alpha, the weights, gradients
  and Adam state stay float32;
- SAC from pixels: the encoder is the conv trunk; actor and critic each own a Linear+LayerNorm+
  tanh head (networks.feature_head), the actor's trained by the actor loss (SAC-AE).

Frame sharing (fpac encoder with the velocity term): s = (o_{t-1}, o_t) and s' = (o_t, o_{t+1})
share o_t, so the online encoder computes points of o_{t-1}, o_t (with gradient) and o_{t+1}
(without) once each: 3 frame passes instead of 4 (a target encoder adds o_t, o_{t+1}), and
backward through 2 frames per sample. This relies on the replay building s' from the same
frame sequence as s (docs/INTERFACES.md); `Batch.validate(check_overlap=True)` checks it.
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from fpac_async.agent.batch import Batch
from fpac_async.config import AgentConfig, lr_at
from fpac_async.agent.encoders import make_encoder
from fpac_async.agent.networks import Actor, TwinCritic
from fpac_async.agent.update_modes import check_compile_mode, make_update_runner


class SAC:
    """Soft actor-critic over an observation encoder; see the module docstring."""

    def __init__(self, cfg: AgentConfig, obs_shape: Tuple[int, int, int], action_dim: int,
                 device: Union[str, torch.device] = "cpu", state_dim: int = 0,
                 amp: bool = False, channels_last: bool = False,
                 fused_adam: Optional[bool] = None, compile_mode: str = "none"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.action_dim = int(action_dim)
        # bf16 autocast where speed.py resolves it on (CUDA, a CPU with AMX / AVX512-BF16, or
        # asked for explicitly).
        self.amp = bool(amp)
        self.channels_last = bool(channels_last)
        check_compile_mode(compile_mode)
        # Fused Adam (one kernel for all tensors) needs CUDA; default: on CUDA only.
        self.fused_adam = (self.device.type == "cuda") if fused_adam is None else bool(fused_adam)
        if self.fused_adam and self.device.type != "cuda":
            raise ValueError("fused_adam needs a CUDA device")
        # CUDA-graph replay needs optimizer state and lr on the device (capturable Adam).
        self._capturable = compile_mode == "cudagraphs" and self.device.type == "cuda"
        # Autocast's weight-cast cache must be off inside captured graphs.
        self._autocast_cache = compile_mode != "cudagraphs"
        self.encoder = make_encoder(cfg, obs_shape, state_dim).to(self.device)
        feature_dim = int(self.encoder.out_dim)
        head_dim = int(cfg.pixels_feature_dim) if cfg.encoder == "pixels" else 0
        self.actor = Actor(feature_dim, self.action_dim, cfg.hidden_dim, cfg.hidden_layers,
                           cfg.log_std_min, cfg.log_std_max, cfg.log_std_bound,
                           head_dim=head_dim, init=cfg.mlp_init,
                           tanh_log_prob=cfg.tanh_log_prob).to(self.device)
        self.critic = TwinCritic(feature_dim, self.action_dim, cfg.hidden_dim,
                                 cfg.hidden_layers, head_dim=head_dim,
                                 init=cfg.mlp_init).to(self.device)
        if self.channels_last:
            self.encoder.to(memory_format=torch.channels_last)
        self.target_encoder = self._frozen_copy(self.encoder) if cfg.target_encoder else None
        self.critic_target = self._frozen_copy(self.critic)
        self.log_alpha = torch.tensor(math.log(cfg.init_temperature), device=self.device,
                                      requires_grad=True)
        self.target_entropy = (float(cfg.target_entropy) if cfg.target_entropy is not None
                               else -float(self.action_dim))
        self.gamma = float(cfg.gamma)
        self.tau = float(cfg.tau)
        self.frame_sharing = cfg.encoder in ("fpac", "pretrained") and cfg.velocity and hasattr(
            self.encoder, "points")

        lr = lr_at(cfg, env_steps=0)
        # A frozen encoder (pretrained) has no parameter that requires grad: none is optimised.
        critic_params = [p for p in self.encoder.parameters() if p.requires_grad] + list(
            self.critic.parameters())
        self._actor_params = list(self.actor.parameters())
        self.critic_opt = self._adam(critic_params, lr)
        self.actor_opt = self._adam(self._actor_params, lr)
        self.alpha_opt = self._adam([self.log_alpha], lr)
        # Flat lists for the Polyak step: one torch._foreach_lerp_ over all target tensors.
        self._online = list(self.critic.parameters())
        self._target = list(self.critic_target.parameters())
        if self.target_encoder is not None:
            self._online = list(self.encoder.parameters()) + self._online
            self._target = list(self.target_encoder.parameters()) + self._target
        self.num_updates = 0
        self.compile_mode = compile_mode
        self._run = make_update_runner(self.step, compile_mode, self.device)

    @staticmethod
    def _frozen_copy(module: torch.nn.Module) -> torch.nn.Module:
        target = copy.deepcopy(module)
        for p in target.parameters():
            p.requires_grad_(False)
        return target

    def _adam(self, params: List[Tensor], lr: float) -> torch.optim.Adam:
        # Fused Adam (CUDA) or multi-tensor foreach; capturable (state and lr as device tensors,
        # so a captured graph reads the current lr) for CUDA graphs.
        kind = {"fused": True} if self.fused_adam else {"foreach": True}
        if self._capturable:
            return torch.optim.Adam(params, lr=torch.tensor(lr, device=self.device),
                                    capturable=True, **kind)
        return torch.optim.Adam(params, lr=lr, **kind)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                                  cache_enabled=self._autocast_cache)
        return contextlib.nullcontext()

    def _obs(self, obs: Tensor) -> Tensor:
        return obs.contiguous(memory_format=torch.channels_last) if self.channels_last else obs

    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.detach().exp()

    # ----------------------------------------------------------------------------- features
    def encode_pair(self, batch: Batch) -> Tuple[Tensor, Tensor, Tensor]:
        """(features of s with gradient, online features of s' without, features of s' for the
        target critic: the target encoder's with cfg.target_encoder, else the online ones).

        All [B, out_dim] in float32 (or bf16 under amp). See the module docstring for the frame
        sharing of the fpac encoder.
        """
        obs, next_obs = self._obs(batch.obs), self._obs(batch.next_obs)
        enc = self.encoder
        if self.frame_sharing:
            b, _, h, w = obs.shape
            # [B, 6, H, W] -> [2B, 3, H, W] is a view: rows (b0 o_{t-1}, b0 o_t, b1 o_{t-1}, ...).
            pts = enc.points(obs.reshape(2 * b, 3, h, w))
            pts = pts.view(b, 2, pts.shape[-2], pts.shape[-1])
            x_prev, x_t = pts[:, 0], pts[:, 1]
            features = enc.state_from_points(x_t, x_prev, batch.cam)
            with torch.no_grad():
                x_next = enc.points(next_obs[:, 3:])
                next_features = enc.state_from_points(x_next, x_t.detach(), batch.next_cam)
        else:
            features = enc(obs, batch.cam, batch.state)
            with torch.no_grad():
                next_features = enc(next_obs, batch.next_cam, batch.next_state)
        if self.target_encoder is None:
            return features, next_features, next_features
        with torch.no_grad():
            target_features = self.target_encoder(next_obs, batch.next_cam, batch.next_state)
        return features, next_features, target_features

    @torch.no_grad()
    def actor_features(self, batch: Batch) -> Tensor:
        """Features of s from the encoder as the critic step left it (the authors' fpac.py
        update_actor_and_alpha re-encodes obs after update_critic), without gradient."""
        return self.encoder(self._obs(batch.obs), batch.cam, batch.state)

    # ------------------------------------------------------------------------------- losses
    def critic_loss(self, batch: Batch, features: Tensor, next_features: Tensor,
                    target_features: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """J_Q (section III): sum over both critics of mean (Q(s, a) - y)^2, with
        y = r + gamma * discount * (min_i Q'_i(s', a') - alpha log pi(a' | s')), a' ~ pi(. | s')."""
        with torch.no_grad():
            next_action, next_log_prob = self.actor.sample(next_features)
            target_q = self.critic_target(target_features, next_action).float().min(0).values
            soft_value = target_q - self.alpha * next_log_prob
            target = batch.reward + self.gamma * batch.discount * soft_value
        q = self.critic(features, batch.action).float()  # [2, B]
        loss = F.mse_loss(q[0], target) + F.mse_loss(q[1], target)
        metrics = {"critic_loss": loss.detach(), "q": q.detach().mean(),
                   "target_q": target.mean()}
        return loss, metrics

    def actor_alpha_loss(self, features: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Actor loss E[alpha log pi(a|s) - min_i Q_i(s, a)] plus temperature loss
        E[log alpha (-log pi(a|s) - target_entropy)] on DETACHED features (no encoder gradient;
        a pixels actor's own head does get the actor loss's gradient).

        The temperature loss is on log alpha, as in the authors' sac.py, so its gradient is
        H - target (not alpha (H - target) as in SAC-AE/DrQ): log alpha falls while the entropy
        H exceeds the target and rises while it is below.
        """
        features = features.detach()
        action, log_prob = self.actor.sample(features)
        q = self.critic(features, action).float().min(0).values
        actor_loss = (self.alpha * log_prob - q).mean()
        entropy = -log_prob.detach()
        alpha_loss = (self.log_alpha * (entropy - self.target_entropy)).mean()
        metrics = {"actor_loss": actor_loss.detach(), "alpha_loss": alpha_loss.detach(),
                   "log_prob": log_prob.detach().mean(), "entropy": entropy.mean()}
        return actor_loss + alpha_loss, metrics

    # ------------------------------------------------------------------------------ update
    def update(self, batch: Batch) -> Dict[str, Tensor]:
        """One SAC step on `batch` (already on self.device). Returns 0-d tensors: critic_loss, q
        (mean Q(s, a) of both critics), target_q (mean Bellman target y), alpha; and on actor
        steps (updates 0, k, 2k, ... for k = actor_update_every) also actor_loss, alpha_loss,
        log_prob (mean log pi(a|s)) and entropy (its negative).

        Runs `step` eagerly, compiled or as a replayed CUDA graph (compile_mode; fpac_async.
        update_modes); all give the same step."""
        actor_step = self.num_updates % self.cfg.actor_update_every == 0
        target_step = self.num_updates % self.cfg.target_update_every == 0
        metrics = self._run(batch, actor_step, target_step)
        self.num_updates += 1
        return metrics

    def step(self, batch: Batch, actor_step: bool, target_step: bool) -> Dict[str, Tensor]:
        """The update's body: critic step, then (actor_step) actor and temperature steps, then
        (target_step) the Polyak step. Tensors in, tensors out: no Python state changes, no
        host-device sync, fixed shapes (so it can be compiled and captured as a CUDA graph)."""
        with self._autocast():
            features, next_features, target_features = self.encode_pair(batch)
            loss, metrics = self.critic_loss(batch, features, next_features, target_features)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()

        if actor_step:
            with self._autocast():
                if self.cfg.actor_features == "recompute":
                    features = self.actor_features(batch)
                loss, actor_metrics = self.actor_alpha_loss(features)
            self.actor_opt.zero_grad(set_to_none=True)
            self.alpha_opt.zero_grad(set_to_none=True)
            # inputs=: autograd skips the critic's weight gradients, which the actor step ignores.
            loss.backward(inputs=self._actor_params + [self.log_alpha])
            self.actor_opt.step()
            self.alpha_opt.step()
            metrics.update(actor_metrics)

        if target_step:
            self.update_targets(self.tau)
        metrics["alpha"] = self.alpha
        return metrics

    @torch.no_grad()
    def update_targets(self, tau: float) -> None:
        """Polyak: target <- target + tau * (online - target), for the target critic (and the
        target encoder, with cfg.target_encoder)."""
        torch._foreach_lerp_(self._target, self._online, tau)

    # ----------------------------------------------------------------------------- acting
    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool, cam: Optional[Tensor] = None,
            state: Optional[Tensor] = None) -> Tensor:
        """Actions f32 [N, A] for observations uint8 [N, 3S, H, W] (tests and evaluation)."""
        cam = None if cam is None else cam.to(self.device)
        state = None if state is None else state.to(self.device)
        with self._autocast():
            features = self.encoder(self._obs(obs.to(self.device)), cam, state)
            return self.actor.act(features, deterministic).float()

    def set_lr(self, lr: float) -> None:
        """Set the Adam learning rate of critic (with encoder), actor and temperature (in place
        when it is a device tensor, which captured CUDA graphs read)."""
        for opt in (self.critic_opt, self.actor_opt, self.alpha_opt):
            for group in opt.param_groups:
                if isinstance(group["lr"], Tensor):
                    group["lr"].fill_(float(lr))
                else:
                    group["lr"] = float(lr)

    # ---------------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict:
        """Everything a resumed learner needs; "target_encoder" only with cfg.target_encoder."""
        state = {
            "encoder": self.encoder.state_dict(), "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(), "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "critic_opt": _float_lr(self.critic_opt.state_dict()),
            "actor_opt": _float_lr(self.actor_opt.state_dict()),
            "alpha_opt": _float_lr(self.alpha_opt.state_dict()), "num_updates": self.num_updates,
        }
        if self.target_encoder is not None:
            state["target_encoder"] = self.target_encoder.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Load a state_dict. A stored target encoder is ignored without cfg.target_encoder; with
        it, a state that has none (saved without the setting) starts it from the online encoder."""
        missing = sorted({"encoder", "actor", "critic", "critic_target", "log_alpha",
                          "critic_opt", "actor_opt", "alpha_opt", "num_updates"} - set(state))
        if missing:
            raise ValueError(f"SAC state_dict is missing keys {missing}")
        self.encoder.load_state_dict(state["encoder"])
        if self.target_encoder is not None:
            self.target_encoder.load_state_dict(state.get("target_encoder", state["encoder"]))
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for opt, key in ((self.critic_opt, "critic_opt"), (self.actor_opt, "actor_opt"),
                         (self.alpha_opt, "alpha_opt")):
            opt.load_state_dict(state[key])
            if self._capturable:  # the lr back to a device tensor (state_dict stores floats)
                for group in opt.param_groups:
                    group["lr"] = torch.tensor(float(group["lr"]), device=self.device)
        self.num_updates = int(state["num_updates"])
        # New optimizer state tensors: captured graphs (which read the old ones) are dropped.
        self._run = make_update_runner(self.step, self.compile_mode, self.device)


def _float_lr(opt_state: dict) -> dict:
    """An optimizer state_dict with tensor learning rates (capturable Adam) as floats, so the
    checkpoint loads on any device and setting."""
    for group in opt_state["param_groups"]:
        if isinstance(group.get("lr"), Tensor):
            group["lr"] = float(group["lr"])
    return opt_state
