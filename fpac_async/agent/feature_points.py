"""Feature points from convolutional feature maps (paper section IV, eq. 1-3, Listing 1).

Every function takes maps `[..., K, H, W]` (float) and returns `[..., K, 3]` ordered (x, y, m):
x runs along W (the last axis), y along H, each on a `linspace(-1, 1)` grid of its own axis's
length. All are pure tensor code (no Python loop over K), differentiable and TorchScript-able,
so the encoder that calls them can be scripted for the actors.

Numerical stability: `torch.softmax` subtracts the row maximum before exponentiating, so logits
of 1e4 / beta give finite probabilities and gradients; tanh of a large mean saturates to +-1 with
a zero (finite) gradient.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_maps(maps: Tensor) -> None:
    if maps.dim() < 3:
        raise ValueError("feature maps must be [..., K, H, W]; got " + str(maps.dim()) + " dims")
    if not maps.is_floating_point():
        raise TypeError("feature maps must be a floating-point tensor")


def _at_least_float32(maps: Tensor) -> Tensor:
    """Half-precision maps (bf16 autocast) as float32; float32 and float64 unchanged."""
    if maps.dtype == torch.bfloat16 or maps.dtype == torch.float16:
        return maps.float()
    return maps


def _grid(n: int, like: Tensor) -> Tensor:
    """The coordinate grid linspace(-1, 1, n) on the maps' device and dtype."""
    return torch.linspace(-1.0, 1.0, n, device=like.device, dtype=like.dtype)


def separable_feature_points(maps: Tensor, temperature: float = 0.5) -> Tensor:
    """Separable feature points (eq. 3) with the scalar feature of eq. 2.

    g_x(k, x) = mean over y of h(x, y, k); p_x = softmax(g_x / beta); x_k = sum_x x p_x(x), and
    the same for y with the mean over x. m_k = tanh(mean of h_k) (eq. 2: tanh OF the mean).

    Why it is fast: the only passes over the full [..., K, H, W] tensor are the two axis sums
    (the memory-bound part); the total mean for m_k comes from the pooled row (no third pass),
    and the softmax and expectations run on the tiny [..., K, W] and [..., K, H] tensors.
    In the backward pass the map gradient is one broadcast add of the two pooled gradients.
    Channels-last 4D maps are reduced in their memory order.
    """
    _check_maps(maps)
    maps = _at_least_float32(maps)  # bf16 maps (autocast): pooling, softmax, expectations in f32
    height = maps.size(-2)
    width = maps.size(-1)
    # Sums, scaled afterwards on the small pooled tensors: the backward of a sum is a free
    # broadcast view, while that of mean() writes a full-size tensor per axis.
    if maps.dim() == 4 and not maps.is_contiguous() \
            and maps.is_contiguous(memory_format=torch.channels_last):
        # Channels-last maps (the convs ran channels-last): reduce in the memory order
        # [N, H, W, K], which is a plain outer-axis reduction, instead of strided inner ones.
        nhwk = maps.permute(0, 2, 3, 1)
        sum_x = nhwk.sum(1).transpose(1, 2)  # [N, K, W]
        sum_y = nhwk.sum(2).transpose(1, 2)  # [N, K, H]
    else:
        sum_x = maps.sum(-2)  # [..., K, W]
        sum_y = maps.sum(-1)  # [..., K, H]
    # eq. 2: the map's mean is the mean of its column sums over H (no third pass over the maps).
    scalar = torch.tanh(sum_x.sum(-1) * (1.0 / (height * width)))
    # eq. 3's g is h pooled by a mean over the other axis; its 1/H (or 1/W) folds into 1/beta.
    if height == width:
        # One softmax and one matrix-vector product for both axes (fewer kernels: this path is
        # what the actors run per step at batch 1 on 84x84 and 32x32 images).
        g = torch.stack([sum_x, sum_y], -2)  # [..., K, 2, W]
        p = torch.softmax(g * (1.0 / (temperature * height)), dim=-1)
        # Expectations as multiply-and-sum, not matmul: autocast would run a matmul in bf16.
        xy = (p * _grid(width, maps)).sum(-1)  # [..., K, 2]
        return torch.cat([xy, scalar.unsqueeze(-1)], -1)
    p_x = torch.softmax(sum_x * (1.0 / (temperature * height)), dim=-1)
    p_y = torch.softmax(sum_y * (1.0 / (temperature * width)), dim=-1)
    x = (p_x * _grid(width, maps)).sum(-1)
    y = (p_y * _grid(height, maps)).sum(-1)
    return torch.stack([x, y, scalar], -1)


def spatial_softmax_feature_points(maps: Tensor, temperature: float = 0.5) -> Tensor:
    """Full spatial-softmax feature points (eq. 1): p = softmax over all H*W of h / beta, then
    (x_k, y_k) = sum over pixels of p times the pixel's (x, y); m_k = tanh(mean h_k) (eq. 2).

    The expectations are multiply-and-sums of p [..., K, H*W] with the flat x and y coordinate
    tables, in float32 (bf16 maps under autocast are cast up first; autocast would run a matmul
    in bf16).
    """
    _check_maps(maps)
    maps = _at_least_float32(maps)
    height = maps.size(-2)
    width = maps.size(-1)
    flat = maps.flatten(-2)  # [..., K, H*W]
    p = torch.softmax(flat * (1.0 / temperature), dim=-1)
    ys, xs = torch.meshgrid(_grid(height, maps), _grid(width, maps), indexing="ij")
    xy = torch.stack([(p * xs.reshape(-1)).sum(-1), (p * ys.reshape(-1)).sum(-1)], -1)
    scalar = torch.tanh(flat.mean(-1))
    return torch.cat([xy, scalar.unsqueeze(-1)], -1)


def listing1_feature_points(maps: Tensor, temp: float = 1.0) -> Tensor:
    """A plain transcription of the paper's Listing 1, for benchmarks only.

    It differs from eq. 2/3 in two ways, kept on purpose: m is the mean of tanh(h) (not tanh of
    the mean, eq. 2), and the W-length grid is used for BOTH axes, so it only works when H == W.
    Returns the same [..., K, 3] (x, y, m) layout as the other functions.
    """
    coords = torch.linspace(-1, 1, steps=maps.size(-1), device=maps.device,
                            dtype=maps.dtype)[None, None, :]

    def compute_coord(other_axis: int) -> Tensor:
        logits_1d = maps.mean(other_axis)  # mean pooling
        probs = F.softmax(logits_1d / temp, dim=-1)  # feature point probabilities
        return (coords * probs).sum(-1)  # expectation of the distribution

    xs = compute_coord(-2)
    ys = compute_coord(-1)
    ms = torch.flatten(maps, -2, -1)
    ms = torch.tanh(ms).mean(-1)
    return torch.stack([xs, ys, ms], -1)
