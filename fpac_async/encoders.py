"""Observation encoders (paper section IV, Fig. 1; DESIGN.md section 1; docs/INTERFACES.md).

`make_encoder(cfg, obs_shape, state_dim)` builds one of:
- `fpac`: the feature-point bottleneck. Each frame goes through four 3x3 convs and a 1x1 conv to
  K maps; feature points (x, y, m) per map (eq. 2-3, or eq. 1 for the spatial ablation); the state
  is [x_t, x_t - x_{t-1}] (6K numbers).
- `pixels`: the same convs on the channel-stacked frames, then Linear + LayerNorm + tanh
  (the SAC-from-pixels baseline the paper compares against).
- `state`: the DMC low-dimensional state, unchanged (the SAC-state baseline).

Every encoder is an `nn.Module` with `forward(obs, cam=None, state=None) -> [B, out_dim]` and an
`out_dim` attribute, and scripts with `torch.jit.script` (the actors run the exported policy).
Observations are uint8 [B, 3S, H, W]; channels [0:3] are the OLDEST frame, [-3:] the NEWEST.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from fpac_async.config import AgentConfig
from fpac_async.feature_points import separable_feature_points, spatial_softmax_feature_points


def conv_output_size(size: int) -> int:
    """Side of the maps after the conv trunk: stride-2 3x3, then three stride-1 3x3, no padding
    (84 -> 41 -> 39 -> 37 -> 35; 32 -> 15 -> 13 -> 11 -> 9)."""
    out = (size - 3) // 2 + 1 - 3 * 2
    if out < 1:
        raise ValueError(f"image side {size} is too small for the conv trunk (needs >= 15)")
    return out


def conv_trunk(in_channels: int, channels: int) -> List[nn.Module]:
    """The four 3x3 convs of the paper's encoder f, each followed by ReLU."""
    layers: List[nn.Module] = [nn.Conv2d(in_channels, channels, 3, stride=2), nn.ReLU()]
    for _ in range(3):
        layers += [nn.Conv2d(channels, channels, 3, stride=1), nn.ReLU()]
    return layers


def _normalise(frames: Tensor) -> Tensor:
    """uint8 pixels -> float in [-0.5, 0.5], keeping the input's memory format (channels_last)."""
    return frames.to(torch.float32) * (1.0 / 255.0) - 0.5


def _check_obs(obs: Tensor, channels: int, height: int, width: int) -> None:
    if obs.dtype != torch.uint8:
        raise TypeError("observations must be uint8 pixels; got " + str(obs.dtype))
    if obs.dim() != 4 or obs.size(1) != channels or obs.size(2) != height \
            or obs.size(3) != width:
        raise ValueError("observations must be [B, " + str(channels) + ", " + str(height) + ", "
                         + str(width) + "]; got " + str(obs.shape))


class FeaturePointEncoder(nn.Module):
    """FPAC's encoder: per-frame conv trunk + 1x1 conv to K maps + feature points (eq. 1-3)."""

    def __init__(self, cfg: AgentConfig, obs_shape: Tuple[int, int, int]):
        super().__init__()
        channels, height, width = obs_shape
        if cfg.frame_stack != 2 or channels != 6:
            raise ValueError("the fpac encoder needs a frame stack of 2 (obs channels 6: o_{t-1}, "
                             f"o_t); got frame_stack={cfg.frame_stack}, obs_shape={obs_shape}")
        if cfg.softmax not in ("separable", "spatial"):
            raise ValueError(f"softmax must be 'separable' or 'spatial'; got {cfg.softmax!r}")
        conv_output_size(min(height, width))
        self.height = height
        self.width = width
        self.num_points = cfg.num_points
        self.spatial = cfg.softmax == "spatial"
        self.temperature = float(cfg.fp_temperature)
        self.scalar_feature = cfg.scalar_feature
        self.relative = cfg.relative
        self.velocity = cfg.velocity
        self.camera_offset = cfg.camera_offset
        self.point_dim = 3 if cfg.scalar_feature else 2
        self.out_dim = cfg.num_points * self.point_dim * (2 if cfg.velocity else 1)
        # A pixel shift (dx, dy) on linspace(-1, 1) grids of W and H points (INTERFACES.md).
        self.cam_scale_x = 2.0 / (width - 1)
        self.cam_scale_y = 2.0 / (height - 1)
        self.convs = nn.Sequential(*conv_trunk(3, cfg.conv_channels),
                                   nn.Conv2d(cfg.conv_channels, cfg.num_points, 1))

    def _points_of(self, pixels: Tensor) -> Tensor:
        """Points [N, K, point_dim] of normalised frames [N, 3, H, W]."""
        maps = self.convs(pixels)  # [N, K, H', W'], no activation after the 1x1 conv
        if self.spatial:
            fp = spatial_softmax_feature_points(maps, self.temperature)
        else:
            fp = separable_feature_points(maps, self.temperature)
        if not self.scalar_feature:
            fp = fp[..., :2]
        if self.relative:
            # Ablation VI-E: coordinates relative to the mean point; m stays as it is.
            xy = fp[..., :2]
            xy = xy - xy.mean(-2, keepdim=True)
            fp = torch.cat([xy, fp[..., 2:]], -1)
        return fp

    @torch.jit.export
    def points(self, frames: Tensor) -> Tensor:
        """Feature points [B, K, 3] ((x, y, m), or [B, K, 2] without m) of frames uint8 [B,3,H,W]."""
        _check_obs(frames, 3, self.height, self.width)
        return self._points_of(_normalise(frames))

    @torch.jit.export
    def state_from_points(self, x_t: Tensor, x_prev: Tensor,
                          cam: Optional[Tensor] = None) -> Tensor:
        """The agent state [B, out_dim] = [x_t, x_t - x_{t-1}] (flattened) from two frames' points.

        With camera_offset, the camera's pixel motion `cam` [B, 2] = (dx, dy) is added to the
        previous points' coordinates first, so a static scene point has zero velocity (Fig. 3).
        """
        if x_t.dim() != 3 or x_t.size(1) != self.num_points or x_t.size(2) != self.point_dim:
            raise ValueError("x_t must be [B, " + str(self.num_points) + ", "
                             + str(self.point_dim) + "]; got " + str(x_t.shape))
        current = x_t.flatten(1)
        if not self.velocity:
            return current
        if x_prev.shape != x_t.shape:
            raise ValueError("x_prev must have the shape of x_t " + str(x_t.shape) + "; got "
                             + str(x_prev.shape))
        if self.camera_offset and cam is not None:
            if cam.dim() != 2 or cam.size(0) != x_t.size(0) or cam.size(1) != 2:
                raise ValueError("cam must be [B, 2]; got " + str(cam.shape))
            scale = torch.tensor([self.cam_scale_x, self.cam_scale_y], dtype=x_prev.dtype,
                                 device=x_prev.device)
            shift = (cam.to(x_prev.dtype) * scale).unsqueeze(1)  # [B, 1, 2]
            x_prev = torch.cat([x_prev[..., :2] + shift, x_prev[..., 2:]], -1)
        return torch.cat([current, current - x_prev.flatten(1)], 1)

    def forward(self, obs: Tensor, cam: Optional[Tensor] = None,
                state: Optional[Tensor] = None) -> Tensor:
        """The state [B, out_dim] of stacked observations uint8 [B, 6, H, W]."""
        _check_obs(obs, 6, self.height, self.width)
        batch = obs.size(0)
        if not self.velocity:
            # Only x_t is used: skip the oldest frame's convs altogether.
            newest = self.points(obs[:, 3:])
            return self.state_from_points(newest, newest, cam)
        # Both frames through the convs in ONE call: [B, 6, H, W] -> [2B, 3, H, W], rows ordered
        # (b0 oldest, b0 newest, b1 oldest, ...). The uint8 reshape is the only copy.
        channels_last = obs.is_contiguous(memory_format=torch.channels_last)
        frames = obs.reshape(batch * 2, 3, self.height, self.width)
        pixels = _normalise(frames)
        if channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        fp = self._points_of(pixels).view(batch, 2, self.num_points, self.point_dim)
        return self.state_from_points(fp[:, 1], fp[:, 0], cam)


class PixelEncoder(nn.Module):
    """SAC-from-pixels baseline: the conv trunk on the stacked frames, Linear, LayerNorm, tanh."""

    def __init__(self, cfg: AgentConfig, obs_shape: Tuple[int, int, int]):
        super().__init__()
        channels, height, width = obs_shape
        if channels != 3 * cfg.frame_stack:
            raise ValueError(f"obs channels {channels} != 3 * frame_stack ({cfg.frame_stack})")
        self.channels = channels
        self.height = height
        self.width = width
        self.out_dim = cfg.pixels_feature_dim
        flat = cfg.conv_channels * conv_output_size(height) * conv_output_size(width)
        self.convs = nn.Sequential(*conv_trunk(channels, cfg.conv_channels))
        self.head = nn.Sequential(nn.Linear(flat, cfg.pixels_feature_dim),
                                  nn.LayerNorm(cfg.pixels_feature_dim), nn.Tanh())

    def forward(self, obs: Tensor, cam: Optional[Tensor] = None,
                state: Optional[Tensor] = None) -> Tensor:
        _check_obs(obs, self.channels, self.height, self.width)
        h = self.convs(_normalise(obs))
        # reshape, not view: a channels_last activation is not view-compatible with flatten.
        return self.head(h.reshape(h.size(0), -1))


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
    raise ValueError(f"cfg.encoder must be 'fpac', 'pixels' or 'state'; got {cfg.encoder!r}")
