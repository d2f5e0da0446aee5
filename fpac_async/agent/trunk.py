"""The FPAC encoder's trunk, shared by the fpac and the pretrained encoders (paper section IV,
Fig. 1; DESIGN.md section 1): the conv geometry and initialisation, the input checks, and the
feature-point encoder itself. Each frame goes through four 3x3 convs (SiLU) and a 1x1 conv to K
maps; feature points (x, y, m) per map (eq. 2-3, or eq. 1 for the spatial ablation); the state
is [x_t, x_{t} - x_{t-1}] (6K numbers). Pixels are scaled to [0, 1] (the authors' / 255).
Observations are uint8 [B, 3S, H, W]; channels [0:3] are the OLDEST frame, [-3:] the NEWEST.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from fpac_async.config import AgentConfig
from fpac_async.agent.feature_points import separable_feature_points, spatial_softmax_feature_points


CONV_STRIDE = 2  # the first conv's stride; the other three are stride 1


def conv_output_size(size: int) -> int:
    """Side of the maps after the conv trunk: stride-2 3x3, then three stride-1 3x3, no padding
    (84 -> 41 -> 39 -> 37 -> 35; 32 -> 15 -> 13 -> 11 -> 9)."""
    out = (size - 3) // CONV_STRIDE + 1 - 3 * 2
    if out < 1:
        raise ValueError(f"image side {size} is too small for the conv trunk (needs >= 15)")
    return out


def map_cell_centre(j: int) -> int:
    """The image pixel under the centre of map cell j: the stride-2 conv's cell i sits over pixel
    2i + 1, and each valid 3x3 conv's cell j over its input's cell j + 1, so 2(j + 3) + 1."""
    return CONV_STRIDE * (j + 3) + 1


def units_per_pixel(size: int) -> float:
    """How far a feature point moves on its linspace(-1, 1) grid when the image content moves by
    one pixel along an image side of `size` pixels.

    The M = conv_output_size(size) cells span the 2 units of the grid and sit over image pixels
    map_cell_centre(0) .. map_cell_centre(M - 1), i.e. CONV_STRIDE * (M - 1) pixels, so one pixel
    is 2 / (CONV_STRIDE * (M - 1)) units: 1/34 at 84 (not 2/(W - 1) = 2/83, nor the authors'
    1/42, which leave a static point ~18-19% of the camera's motion as velocity).
    """
    cells = conv_output_size(size)
    if cells == 1:
        return 0.0  # a single cell: the point cannot move
    return 2.0 / (CONV_STRIDE * (cells - 1))


def init_conv(module: nn.Module) -> None:
    """Orthogonal weights with the ReLU gain and zero biases on every conv, the 1x1 included (the
    authors' utils.weight_init). PyTorch's default init leaves the K maps nearly flat, so at
    start-up the 32 points sat within ~1e-4 of each other on real frames (issue 10)."""
    if isinstance(module, nn.Conv2d):
        nn.init.orthogonal_(module.weight, nn.init.calculate_gain("relu"))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def conv_trunk(in_channels: int, channels: int) -> List[nn.Module]:
    """The four 3x3 convs of the paper's encoder f, each followed by SiLU (Table I's Swish; the
    authors' keypoints_encoder.py)."""
    layers: List[nn.Module] = [nn.Conv2d(in_channels, channels, 3, stride=CONV_STRIDE), nn.SiLU()]
    for _ in range(3):
        layers += [nn.Conv2d(channels, channels, 3, stride=1), nn.SiLU()]
    return layers


def normalise(frames: Tensor) -> Tensor:
    """uint8 pixels -> float in [0, 1] (the authors' / 255), keeping the memory format."""
    return frames.to(torch.float32) * (1.0 / 255.0)


def _dtype_name(t: Tensor) -> str:
    """The dtype's name in eager and in TorchScript, where str(dtype) is a number (issue 20:
    the exported policy said 'got 6' for float32)."""
    for dtype, name in ((torch.float32, "float32"), (torch.float64, "float64"),
                        (torch.float16, "float16"), (torch.bfloat16, "bfloat16"),
                        (torch.int64, "int64"), (torch.int32, "int32"), (torch.int16, "int16"),
                        (torch.int8, "int8"), (torch.bool, "bool")):
        if t.dtype == dtype:
            return name
    return str(t.dtype)


def check_obs(obs: Tensor, channels: int, height: int, width: int) -> None:
    """A clear error for a wrong dtype or shape (the exported policy runs it too)."""
    if obs.dtype != torch.uint8:
        raise TypeError("observations must be uint8 pixels; got " + _dtype_name(obs))
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
        # One image pixel of camera motion in the maps' grid units, per axis (units_per_pixel).
        self.cam_scale_x = units_per_pixel(width)
        self.cam_scale_y = units_per_pixel(height)
        self.convs = nn.Sequential(*conv_trunk(3, cfg.conv_channels),
                                   nn.Conv2d(cfg.conv_channels, cfg.num_points, 1))
        self.convs.apply(init_conv)

    def _points_of(self, pixels: Tensor) -> Tensor:
        """Absolute points [N, K, point_dim] of normalised frames [N, 3, H, W]."""
        maps = self.convs(pixels)  # [N, K, H', W'], no activation after the 1x1 conv
        if self.spatial:
            fp = spatial_softmax_feature_points(maps, self.temperature)
        else:
            fp = separable_feature_points(maps, self.temperature)
        if not self.scalar_feature:
            fp = fp[..., :2]
        return fp

    @torch.jit.export
    def points(self, frames: Tensor) -> Tensor:
        """ABSOLUTE feature points [B, K, 3] ((x, y, m), or [B, K, 2] without m) of frames uint8
        [B, 3, H, W]: what actors cache as the next step's x_{t-1}. Centring (relative) happens
        in state_from_points, after the velocity."""
        check_obs(frames, 3, self.height, self.width)
        return self._points_of(normalise(frames))

    @torch.jit.export
    def state_from_points(self, x_t: Tensor, x_prev: Tensor,
                          cam: Optional[Tensor] = None) -> Tensor:
        """The agent state [B, out_dim] = [x_t, x_t - x_{t-1}] (flattened) from two frames'
        absolute points, in the order of the authors' keypoints_encoder.py:

        1. camera_offset: the camera's pixel motion `cam` [B, 2] = (dx, dy) (how far static
           content moved in the image since the previous frame) is added to x_{t-1}'s
           coordinates, scaled by units_per_pixel, so a static scene point has zero velocity
           (Fig. 3);
        2. velocity x_t - x_{t-1} on these absolute points (m included), so a motion shared by
           all points (the whole body moving) stays in the state;
        3. relative (VI-E): x_t's x and y minus their mean over the K points; m unchanged.
        """
        if x_t.dim() != 3 or x_t.size(1) != self.num_points or x_t.size(2) != self.point_dim:
            raise ValueError("x_t must be [B, " + str(self.num_points) + ", "
                             + str(self.point_dim) + "]; got " + str(x_t.shape))
        current = x_t
        if self.relative:
            xy = x_t[..., :2]
            current = torch.cat([xy - xy.mean(1, keepdim=True), x_t[..., 2:]], -1)
        if not self.velocity:
            return current.flatten(1)
        if x_prev.shape != x_t.shape:
            raise ValueError("x_prev must have the shape of x_t " + str(x_t.shape) + "; got "
                             + str(x_prev.shape))
        if self.camera_offset and cam is not None:
            if cam.dim() != 2 or cam.size(0) != x_t.size(0) or cam.size(1) != 2:
                raise ValueError("cam must be [B, 2]; got " + str(cam.shape))
            # Scaled per axis with Python floats: no host-to-device copy of a scale tensor inside
            # the update (a captured CUDA graph allows none; docs/GPU.md).
            cam = cam.to(x_prev.dtype)
            shift = torch.stack([cam[:, 0] * self.cam_scale_x, cam[:, 1] * self.cam_scale_y],
                                -1).unsqueeze(1)  # [B, 1, 2]
            x_prev = torch.cat([x_prev[..., :2] + shift, x_prev[..., 2:]], -1)
        return torch.cat([current.flatten(1), (x_t - x_prev).flatten(1)], 1)

    def forward(self, obs: Tensor, cam: Optional[Tensor] = None,
                state: Optional[Tensor] = None) -> Tensor:
        """The state [B, out_dim] of stacked observations uint8 [B, 6, H, W]."""
        check_obs(obs, 6, self.height, self.width)
        batch = obs.size(0)
        if not self.velocity:
            # Only x_t is used: skip the oldest frame's convs altogether.
            newest = self.points(obs[:, 3:])
            return self.state_from_points(newest, newest, cam)
        # Both frames through the convs in ONE call: [B, 6, H, W] -> [2B, 3, H, W], rows ordered
        # (b0 oldest, b0 newest, b1 oldest, ...). The uint8 reshape is the only copy.
        channels_last = obs.is_contiguous(memory_format=torch.channels_last)
        frames = obs.reshape(batch * 2, 3, self.height, self.width)
        pixels = normalise(frames)
        if channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        fp = self._points_of(pixels).view(batch, 2, self.num_points, self.point_dim)
        return self.state_from_points(fp[:, 1], fp[:, 0], cam)
