"""Pretrained feature points: the SAC-from-pretrained-feature-points baseline of Fig. 2.

Paper, section V: "We train a self-supervised feature points encoder from 10k images collected
using a random policy. Pre-training is done similarly to [11] (Jakab et al. 2018) by minimizing the
reconstruction loss. The pre-trained feature points are used as the SAC inputs." Section VI-A and
Fig. 9-10 show why it lags FPAC on cheetah and walker (the frozen points do not generalise to the
states a learning agent visits).

The autoencoder follows Jakab et al. and the authors' keypoints_encoder.py (`enable_decoder`):
- points: FPAC's own encoder f (conv trunk + 1x1 conv to K maps, feature points of eq. 2-3), so
  its weights load straight into a FeaturePointEncoder;
- each point (x, y) is rendered as a Gaussian map exp(-|g - p|^2 / std^2), std 0.1 on the maps'
  linspace(-1, 1) grid (the authors' compute_heatmaps), one map per point;
- a reference frame (another frame of the batch, the authors' obs_style = next_obs[randperm])
  goes through its own conv trunk: the appearance that the points need not carry;
- a decoder of transposed convolutions (the authors' decoder_conv) maps [Gaussian maps, reference
  features] back to the frame; loss: binary cross-entropy of the logits with the frame in [0, 1].

`pretrained_encoder(cfg, obs_shape)` is the SAC's encoder for `--encoder pretrained`: a
FeaturePointEncoder with the file's weights and architecture (num_points, conv_channels, softmax,
temperature come from the file), every parameter frozen (requires_grad False; SAC gives the
critic's optimizer only parameters that require grad). Its state is built like FPAC's
([x_t, x_t - x_{t-1}], relative, camera offset as configured), and as its weights are in the
encoder's state_dict they travel to the actors with the policy (no file needed there).

The command that collects frames and trains it: deploy/pretrain_points.py (fpac-pretrain).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fpac_async.config import AgentConfig, ConfigError
from fpac_async.agent.trunk import FeaturePointEncoder, conv_trunk, init_conv

FORMAT = "fpac-pretrained-points"
VERSION = 1
HEATMAP_STD = 0.1  # grid units (the maps span [-1, 1]); the authors' compute_heatmaps
ARCH_FIELDS = ("num_points", "conv_channels", "softmax", "fp_temperature")


class PretrainedPointsError(ConfigError):
    """A pretrained-points file that cannot be used; the message says which file and why."""


def gaussian_maps(points: Tensor, height: int, width: int, std: float = HEATMAP_STD) -> Tensor:
    """Maps [B, K, height, width] with a Gaussian bump at each point's (x, y) [B, K, 2] (x along
    the width), on linspace(-1, 1) grids: Jakab et al.'s rendering of points as images."""
    ys = torch.linspace(-1.0, 1.0, height, device=points.device, dtype=points.dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=points.device, dtype=points.dtype)
    dy = (ys.view(1, 1, height, 1) - points[..., 1, None, None]) ** 2
    dx = (xs.view(1, 1, 1, width) - points[..., 0, None, None]) ** 2
    return torch.exp(-(dx + dy) / (std ** 2))


def _decoder(in_channels: int, channels: int, height: int, width: int,
             map_size: Tuple[int, int]) -> nn.Sequential:
    """Transposed convs undoing the trunk's sizes: three 3x3 (+2 each), then a stride-2 3x3 with
    the output padding that lands exactly on the frame's size (the authors' decoder_conv)."""
    pads = []
    for size, cells in ((height, map_size[0]), (width, map_size[1])):
        pad = size - (2 * (cells + 6 - 1) + 3)
        if pad not in (0, 1):
            raise ValueError(f"no decoder reaches {size} pixels from {cells} map cells")
        pads.append(pad)
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, channels, 3), nn.SiLU(),
        nn.ConvTranspose2d(channels, channels, 3), nn.SiLU(),
        nn.ConvTranspose2d(channels, channels, 3), nn.SiLU(),
        nn.ConvTranspose2d(channels, 3, 3, stride=2, output_padding=tuple(pads)))


class PointAutoencoder(nn.Module):
    """Frame -> K feature points -> Gaussian maps + a reference frame's features -> frame."""

    def __init__(self, cfg: AgentConfig, image_size: Tuple[int, int]):
        super().__init__()
        height, width = int(image_size[0]), int(image_size[1])
        self.image_size = (height, width)
        # The SAC's encoder itself (frame_stack 2 is its layout; only its single-frame path
        # `points` is used here), so its state_dict is what pretrained_encoder loads.
        self.points_net = FeaturePointEncoder(dataclasses.replace(cfg, frame_stack=2),
                                              (6, height, width))
        channels = cfg.conv_channels
        self.appearance = nn.Sequential(*conv_trunk(3, channels))
        self.appearance.apply(init_conv)
        with torch.no_grad():
            cells = self.appearance(torch.zeros(1, 3, height, width)).shape[-2:]
        self.map_size = (int(cells[0]), int(cells[1]))
        self.decoder = _decoder(cfg.num_points + channels, channels, height, width,
                                self.map_size)

    def forward(self, frames: Tensor, reference: Tensor) -> Tuple[Tensor, Tensor]:
        """(reconstruction logits [B, 3, H, W], points [B, K, 3]) of uint8 frames and reference
        frames [B, 3, H, W]."""
        points = self.points_net.points(frames)
        maps = gaussian_maps(points[..., :2], *self.map_size)
        style = self.appearance(reference.to(torch.float32) / 255.0)
        return self.decoder(torch.cat([maps, style], 1)), points

    def loss(self, frames: Tensor, reference: Tensor) -> Tensor:
        """Binary cross-entropy of the reconstruction of `frames` (Jakab et al.; the authors'
        compute_decoder_loss)."""
        logits, _ = self(frames, reference)
        return F.binary_cross_entropy_with_logits(logits, frames.to(torch.float32) / 255.0)


def architecture(cfg: AgentConfig) -> Dict[str, Any]:
    return {name: getattr(cfg, name) for name in ARCH_FIELDS}


def save_pretrained(path: str, model: PointAutoencoder, cfg: AgentConfig,
                    meta: Dict[str, Any]) -> None:
    """Write the encoder's weights, its architecture and `meta` (task, frames, losses, ...)
    atomically: a crash never leaves half a file."""
    data = {"format": FORMAT, "version": VERSION, "architecture": architecture(cfg),
            "image_size": list(model.image_size), "meta": meta,
            "encoder": {k: v.detach().cpu() for k, v in model.points_net.state_dict().items()},
            "autoencoder": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".pretrained-", suffix=".pt")
    os.close(fd)
    try:
        torch.save(data, tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_pretrained(path: str) -> Dict[str, Any]:
    """The file's contents (tensors and plain data only: weights_only, no pickled code)."""
    if not path:
        raise PretrainedPointsError("no pretrained-points file given (--pretrained PATH)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PretrainedPointsError(f"no pretrained-points file at {path} (write one with "
                                    "fpac-pretrain)") from None
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a corrupt file
        raise PretrainedPointsError(f"{path} is not a readable pretrained-points file: {e}") \
            from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PretrainedPointsError(f"{path} is not a pretrained-points file (format "
                                    f"{data.get('format') if isinstance(data, dict) else None!r})")
    if data.get("version") != VERSION:
        raise PretrainedPointsError(f"{path}: version {data.get('version')!r}, this code reads "
                                    f"{VERSION}")
    return data


def check_pretrained(cfg: AgentConfig) -> None:
    """The learner's early check (learner/cli.py, deploy/train_cli.py): with --encoder pretrained,
    --pretrained must name a readable file; a PretrainedPointsError (a ConfigError) says why not.
    Not in config.resolve: the actors, which resolve the same flags, never read the file."""
    if cfg.encoder == "pretrained":
        load_pretrained(cfg.pretrained)


def pretrained_encoder(cfg: AgentConfig, obs_shape: Tuple[int, int, int]) -> FeaturePointEncoder:
    """The frozen FeaturePointEncoder of cfg.pretrained for observations obs_shape (6, H, W)."""
    data = load_pretrained(cfg.pretrained)
    if list(data["image_size"]) != [int(obs_shape[1]), int(obs_shape[2])]:
        raise PretrainedPointsError(f"{cfg.pretrained} was trained on {data['image_size']} "
                                    f"frames; this run's are {list(obs_shape[1:])}")
    arch_cfg = dataclasses.replace(cfg, **data["architecture"])
    encoder = FeaturePointEncoder(arch_cfg, obs_shape)
    encoder.load_state_dict(data["encoder"])
    encoder.requires_grad_(False)  # frozen: no gradient, and SAC's optimizers skip it
    return encoder
