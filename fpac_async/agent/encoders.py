"""Observation encoders (paper section IV, Fig. 1; DESIGN.md section 1; docs/INTERFACES.md).

`make_encoder(cfg, obs_shape, state_dim)` builds one of:
- `fpac`: the feature-point bottleneck. Each frame goes through four 3x3 convs (SiLU) and a 1x1
  conv to K maps; feature points (x, y, m) per map (eq. 2-3, or eq. 1 for the spatial ablation);
  the state is [x_t, x_t - x_{t-1}] (6K numbers). Pixels are scaled to [0, 1] (the authors' / 255).
- `pixels`: the same convs on the channel-stacked frames, flattened (the SAC-from-pixels baseline
  the paper compares against; the actor and the critic each put their own Linear + LayerNorm +
  tanh head on these features, as in SAC-AE).
- `state`: the env's low-dimensional state, unchanged (the SAC-state baseline; with
  --state-source keypoints the handcrafted keypoints, fpac_async/agent/keypoints.py).
- `pretrained`: the fpac encoder with frozen pretrained weights (cfg.pretrained;
  fpac_async/agent/pretrained_points.py): SAC on pretrained feature points.

Every encoder is an `nn.Module` with `forward(obs, cam=None, state=None) -> [B, out_dim]` and an
`out_dim` attribute, and scripts with `torch.jit.script` (the actors run the exported policy).
Observations are uint8 [B, 3S, H, W]; channels [0:3] are the OLDEST frame, [-3:] the NEWEST.
"""
from typing import Optional, Tuple

from torch import Tensor, nn

from fpac_async.config import AgentConfig
from fpac_async.agent.pretrained_points import pretrained_encoder
from fpac_async.agent.trunk import (FeaturePointEncoder, check_obs, normalise, conv_output_size,
                                    conv_trunk, init_conv)


class PixelEncoder(nn.Module):
    """SAC-from-pixels baseline: the conv trunk on the stacked frames, flattened.

    As in SAC-AE, the Linear+LayerNorm+tanh heads on these conv features belong to the critic
    (trained with the convs by the critic loss) and to the actor (its own head, trained by the
    actor loss on the detached conv output): see networks.feature_head and sac.py.
    """

    def __init__(self, cfg: AgentConfig, obs_shape: Tuple[int, int, int]):
        super().__init__()
        channels, height, width = obs_shape
        if channels != 3 * cfg.frame_stack:
            raise ValueError(f"obs channels {channels} != 3 * frame_stack ({cfg.frame_stack})")
        self.channels = channels
        self.height = height
        self.width = width
        self.out_dim = cfg.conv_channels * conv_output_size(height) * conv_output_size(width)
        self.convs = nn.Sequential(*conv_trunk(channels, cfg.conv_channels))
        self.convs.apply(init_conv)

    def forward(self, obs: Tensor, cam: Optional[Tensor] = None,
                state: Optional[Tensor] = None) -> Tensor:
        """Conv features [B, out_dim] of stacked observations uint8 [B, 3S, H, W]."""
        check_obs(obs, self.channels, self.height, self.width)
        h = self.convs(normalise(obs))
        # reshape, not view: a channels_last activation is not view-compatible with flatten.
        return h.reshape(h.size(0), -1)


class StateEncoder(nn.Module):
    """SAC-state baseline: the DMC low-dimensional state passed through unchanged."""

    def __init__(self, state_dim: int):
        super().__init__()
        if state_dim < 1:
            raise ValueError(f"the state encoder needs state_dim >= 1; got {state_dim}")
        self.out_dim = state_dim

    def forward(self, obs: Tensor, cam: Optional[Tensor] = None,
                state: Optional[Tensor] = None) -> Tensor:
        if state is None:
            raise ValueError("the state encoder needs the low-dimensional `state` tensor")
        if state.dim() != 2 or state.size(1) != self.out_dim:
            raise ValueError("state must be [B, " + str(self.out_dim) + "]; got "
                             + str(state.shape))
        return state


Encoder = nn.Module
"""Any of the encoders above: forward(obs, cam=None, state=None) -> [B, out_dim], `out_dim`."""


def make_encoder(cfg: AgentConfig, obs_shape: Tuple[int, int, int],
                 state_dim: int = 0) -> nn.Module:
    """The encoder named by cfg.encoder for stacked observations of shape obs_shape (3S, H, W)."""
    obs_shape = (int(obs_shape[0]), int(obs_shape[1]), int(obs_shape[2]))
    if cfg.encoder == "fpac":
        return FeaturePointEncoder(cfg, obs_shape)
    if cfg.encoder == "pixels":
        return PixelEncoder(cfg, obs_shape)
    if cfg.encoder == "state":
        return StateEncoder(state_dim)
    if cfg.encoder == "pretrained":
        return pretrained_encoder(cfg, obs_shape)
    raise ValueError(f"cfg.encoder must be 'fpac', 'pixels', 'state' or 'pretrained'; "
                     f"got {cfg.encoder!r}")
