"""Encoders: shapes for every option, state assembly by hand (relative points, camera offset),
conv geometry, init, TorchScript. Tests on rendered DMC frames are in test_fidelity.py."""
import itertools

import pytest
import torch
from torch import nn

from fpac_async.config import AgentConfig
from fpac_async.agent.encoders import make_encoder
from fpac_async.agent.trunk import conv_output_size, map_cell_centre, units_per_pixel

K = 4


def small_cfg(**kw) -> AgentConfig:
    base = dict(num_points=K, conv_channels=8, pixels_feature_dim=16)
    base.update(kw)
    return AgentConfig(**base)


def random_obs(batch: int, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 6, height, width), generator=gen, dtype=torch.uint8)


def seeded(cfg: AgentConfig, obs_shape=(6, 32, 32), state_dim: int = 0):
    torch.manual_seed(0)
    return make_encoder(cfg, obs_shape, state_dim)


def test_conv_output_sizes():
    assert conv_output_size(84) == 35
    assert conv_output_size(32) == 9
    enc = seeded(AgentConfig(), (6, 84, 84))
    assert enc.convs(torch.zeros(1, 3, 84, 84)).shape == (1, 32, 35, 35)
    assert enc.out_dim == 6 * 32


OPTIONS = list(itertools.product(["separable", "spatial"], [True, False], [True, False],
                                 [True, False], [True, False]))


@pytest.mark.parametrize("softmax,scalar,velocity,relative,camera", OPTIONS)
def test_fpac_output_shape_for_every_option(softmax, scalar, velocity, relative, camera):
    cfg = small_cfg(softmax=softmax, scalar_feature=scalar, velocity=velocity,
                    relative=relative, camera_offset=camera)
    enc = seeded(cfg, (6, 32, 40))
    out = enc(random_obs(3, 32, 40), torch.ones(3, 2))
    expected = K * (3 if scalar else 2) * (2 if velocity else 1)
    assert enc.out_dim == expected
    assert out.shape == (3, expected) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert enc.points(random_obs(3, 32, 40)[:, 3:]).shape == (3, K, 3 if scalar else 2)


def test_points_are_absolute_whatever_relative_says():
    obs = random_obs(5)
    rel = seeded(small_cfg(relative=True)).points(obs[:, 3:])
    absolute = seeded(small_cfg(relative=False)).points(obs[:, 3:])
    torch.testing.assert_close(rel, absolute, rtol=0, atol=0)
    assert rel[..., :2].mean(1).abs().max() > 1e-4  # not centred: actors cache these


def two_point_case():
    """K = 2, hand-made: every point moves by (+0.1, -0.05); point 1's m drops 0.6 -> 0.5."""
    x_prev = torch.tensor([[[-0.5, 0.2, 0.3], [0.1, -0.4, 0.6]]])
    x_t = torch.tensor([[[-0.4, 0.15, 0.3], [0.2, -0.45, 0.5]]])
    return x_prev, x_t


def test_relative_velocity_keeps_the_motion_shared_by_all_points():
    # Authors' order: velocity on absolute points, THEN centre x_t. x_t's mean is (-0.1, -0.15),
    # so centred x_t = [(-0.3, 0.3), (0.3, -0.3)]; the velocity keeps the shared (+0.1, -0.05).
    # (Centring each frame before the velocity would make the x, y velocities all zero.)
    enc = seeded(small_cfg(num_points=2, relative=True))
    x_prev, x_t = two_point_case()
    state = enc.state_from_points(x_t, x_prev)
    expected = torch.tensor([[-0.3, 0.3, 0.3, 0.3, -0.3, 0.5,
                              0.1, -0.05, 0.0, 0.1, -0.05, -0.1]])
    torch.testing.assert_close(state, expected, rtol=0, atol=1e-6)
    # Without the velocity term the state is the centred x_t alone.
    enc = seeded(small_cfg(num_points=2, relative=True, velocity=False))
    torch.testing.assert_close(enc.state_from_points(x_t, x_prev), expected[:, :6],
                               rtol=0, atol=1e-6)
    # Absolute points: x_t as it is.
    enc = seeded(small_cfg(num_points=2, relative=False))
    torch.testing.assert_close(enc.state_from_points(x_t, x_prev)[:, :6], x_t.flatten(1))


def test_relative_with_camera_offset_compensates_then_centres():
    # 32 x 32 images: 9 map cells over pixels 7..23, so one pixel is 2 / 16 = 1/8 unit.
    # The camera moved so that static content shifted by (+0.8, -0.4) pixels = (+0.1, -0.05)
    # units: exactly the points' motion, so every velocity but m's is zero.
    enc = seeded(small_cfg(num_points=2, relative=True, camera_offset=True))
    x_prev, x_t = two_point_case()
    state = enc.state_from_points(x_t, x_prev, torch.tensor([[0.8, -0.4]]))
    expected = torch.tensor([[-0.3, 0.3, 0.3, 0.3, -0.3, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, -0.1]])
    torch.testing.assert_close(state, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("softmax", ["separable", "spatial"])
@pytest.mark.parametrize("relative", [False, True])
def test_state_is_points_and_velocity_by_hand(softmax, relative):
    enc = seeded(small_cfg(softmax=softmax, relative=relative))
    obs = random_obs(4)
    x_t = enc.points(obs[:, 3:])  # newest frame: channels [-3:]
    x_prev = enc.points(obs[:, :3])
    shown = x_t.clone()
    if relative:
        shown[..., :2] -= x_t[..., :2].mean(1, keepdim=True)
    expected = torch.cat([shown.flatten(1), (x_t - x_prev).flatten(1)], 1)
    torch.testing.assert_close(enc(obs), expected)
    assert not torch.allclose(x_t, x_prev)  # the frames differ, so the test can fail


def test_without_velocity_state_is_newest_points():
    enc = seeded(small_cfg(velocity=False, relative=False))
    obs = random_obs(2)
    torch.testing.assert_close(enc(obs), enc.points(obs[:, 3:]).flatten(1))


def test_map_geometry_hand_computed():
    # Stride-2 3x3 conv: cell i over pixel 2i + 1; each valid 3x3 conv: cell j over cell j + 1.
    assert [map_cell_centre(j) for j in (0, 1, 34)] == [7, 9, 75]
    assert units_per_pixel(84) == pytest.approx(1 / 34)  # 35 cells over 68 pixels = 2 units
    assert units_per_pixel(32) == pytest.approx(1 / 8)  # 9 cells over pixels 7..23
    assert units_per_pixel(40) == pytest.approx(1 / 12)  # 13 cells over pixels 7..31


def probe_encoder(size: int, cfg: AgentConfig | None = None,
                  colour: tuple[float, float, float] = (1.0, 0.0, 0.0)) -> nn.Module:
    """An fpac encoder (K = 1) whose map is colour . (r, g, b) (default: the red channel), read
    at each cell's centre tap: every 3x3 conv passes channel 0 through its centre weight only,
    so cell j reads exactly pixel map_cell_centre(j), and a large 1x1 weight makes the softmax
    pick the cell of the largest value."""
    cfg = cfg or small_cfg(num_points=1, camera_offset=True, relative=False)
    enc = seeded(cfg, (6, size, size))
    with torch.no_grad():
        for conv in [m for m in enc.convs if isinstance(m, nn.Conv2d)]:
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[0, 0, conv.kernel_size[0] // 2, conv.kernel_size[1] // 2] = 1.0
        enc.convs[0].weight[0, :, 1, 1] = torch.tensor(colour)
        enc.convs[-1].weight[0, 0] = 1e4
    return enc


def stripe(size: int, col: int, row: int) -> torch.Tensor:
    """Frame uint8 [1, 3, size, size]: red column `col` and red row `row` on black."""
    frame = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    frame[0, 0, :, col] = 255
    frame[0, 0, row, :] = 255
    return frame


@pytest.mark.parametrize("size", [84, 32])
def test_conv_geometry_and_camera_scale_on_shifted_images(size):
    # A red line over pixel map_cell_centre(j) puts the point on grid value j of the maps'
    # linspace(-1, 1, M); shifting the image by (dx, dy) pixels moves the point by
    # units_per_pixel * (dx, dy), which the camera offset cancels exactly.
    cells = conv_output_size(size)
    enc = probe_encoder(size)
    grid = torch.linspace(-1, 1, cells)
    j_x, j_y, dx, dy = 2, cells - 3, 6, -4  # pixel shifts of 3 and -2 cells
    prev = enc.points(stripe(size, map_cell_centre(j_x), map_cell_centre(j_y)))
    now = enc.points(stripe(size, map_cell_centre(j_x) + dx, map_cell_centre(j_y) + dy))
    torch.testing.assert_close(prev[0, 0, :2], torch.stack([grid[j_x], grid[j_y]]),
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(now[0, 0, :2] - prev[0, 0, :2],
                               torch.tensor([dx, dy]) * units_per_pixel(size), rtol=0, atol=1e-5)
    velocity = enc.state_from_points(now, prev, torch.tensor([[float(dx), float(dy)]]))[0, 3:5]
    torch.testing.assert_close(velocity, torch.zeros(2), rtol=0, atol=1e-5)


def test_camera_offset_shifts_previous_points_exactly():
    # 40 wide, 32 high: a pixel is 1/12 unit in x (13 cells) and 1/8 in y (9 cells).
    enc = seeded(small_cfg(camera_offset=True), (6, 32, 40))
    x_t = torch.zeros(2, K, 3)
    x_prev = torch.zeros(2, K, 3)
    x_prev[..., 2] = 0.25
    cam = torch.tensor([[3.0, -2.0], [0.0, 1.5]])
    state = enc.state_from_points(x_t, x_prev, cam)
    velocity = state[:, 3 * K:].view(2, K, 3)
    expected = torch.tensor([[-3.0 / 12, 2.0 / 8, -0.25],
                             [0.0, -1.5 / 8, -0.25]])
    torch.testing.assert_close(velocity, expected[:, None, :].expand(2, K, 3))
    # No cam means no shift; the forward pass applies the same shift as state_from_points.
    torch.testing.assert_close(enc.state_from_points(x_t, x_prev)[:, 3 * K:].view(2, K, 3)[..., 0],
                               torch.zeros(2, K))
    obs = random_obs(2, 32, 40)
    torch.testing.assert_close(enc(obs, cam), enc.state_from_points(
        enc.points(obs[:, 3:]), enc.points(obs[:, :3]), cam))


def test_camera_offset_ignored_when_disabled():
    enc = seeded(small_cfg(camera_offset=False))
    obs = random_obs(2)
    torch.testing.assert_close(enc(obs, torch.full((2, 2), 5.0)), enc(obs))


@pytest.mark.parametrize("kw", [dict(), dict(softmax="spatial", relative=True, camera_offset=True),
                                dict(scalar_feature=False, velocity=False),
                                dict(encoder="pixels"), dict(encoder="state")])
def test_scripted_encoder_matches_eager(kw):
    enc = seeded(small_cfg(**kw), state_dim=5)
    scripted = torch.jit.script(enc)
    obs = random_obs(3)
    cam = torch.tensor([[1.0, 2.0], [-1.0, 0.0], [0.5, 0.5]])
    state = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(scripted(obs, cam, state), enc(obs, cam, state))
    assert scripted.out_dim == enc.out_dim
    if kw.get("encoder", "fpac") == "fpac":
        x_t = scripted.points(obs[:, 3:])
        torch.testing.assert_close(x_t, enc.points(obs[:, 3:]))
        torch.testing.assert_close(scripted.state_from_points(x_t, x_t, cam),
                                   enc.state_from_points(x_t, x_t, cam))


@pytest.mark.parametrize("encoder", ["fpac", "pixels"])
def test_channels_last_input_gives_same_output(encoder):
    enc = seeded(small_cfg(encoder=encoder))
    obs = random_obs(3)
    out = enc(obs.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, enc(obs), atol=1e-5, rtol=1e-5)
    enc_cl = enc.to(memory_format=torch.channels_last)
    torch.testing.assert_close(enc_cl(obs.contiguous(memory_format=torch.channels_last)),
                               enc(obs), atol=1e-5, rtol=1e-5)


def test_gradient_reaches_conv_weights():
    enc = seeded(small_cfg())
    enc(random_obs(2)).pow(2).sum().backward()
    for p in enc.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert enc.convs[0].weight.grad.abs().sum() > 0


def test_pixels_encoder_is_the_flattened_conv_trunk():
    # The Linear+LayerNorm+tanh heads belong to the actor and the critic (test_sac.py).
    enc = seeded(small_cfg(encoder="pixels"), (6, 84, 84))
    obs = random_obs(2, 84, 84)
    out = enc(obs)
    assert enc.out_dim == 8 * 35 * 35 and out.shape == (2, 8 * 35 * 35)
    assert enc.convs[0].in_channels == 6
    torch.testing.assert_close(out, enc.convs(obs.float() / 255).flatten(1))


@pytest.mark.parametrize("encoder", ["fpac", "pixels"])
def test_convs_silu_orthogonal_relu_gain_zero_bias(encoder):
    # The authors' keypoints_encoder.py: SiLU after each 3x3 conv, none after the 1x1;
    # utils.weight_init: orthogonal (gain sqrt(2)) and zero bias on every conv, 1x1 included.
    enc = seeded(small_cfg(encoder=encoder, num_points=8), (6, 32, 32))
    layers = list(enc.convs)
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    assert len(convs) == (5 if encoder == "fpac" else 4)
    for conv in convs[:4]:
        assert isinstance(layers[layers.index(conv) + 1], nn.SiLU)
    if encoder == "fpac":
        assert layers[-1] is convs[-1] and convs[-1].kernel_size == (1, 1)
    for conv in convs:
        w = conv.weight.detach().flatten(1)  # [out, in * k * k], rows orthogonal when out <= in
        rows = min(w.shape)
        gram = w @ w.t() if w.shape[0] <= w.shape[1] else w.t() @ w
        torch.testing.assert_close(gram, 2.0 * torch.eye(rows), rtol=0, atol=1e-5)
        assert torch.count_nonzero(conv.bias) == 0


def test_pixels_are_scaled_to_unit_range():
    # The authors' obs / 255 (not / 255 - 0.5): 0 -> 0.0, 255 -> 1.0, 51 -> 0.2.
    enc = seeded(small_cfg(relative=False))
    for value in (0, 51, 255):
        frame = torch.full((1, 3, 32, 32), value, dtype=torch.uint8)
        torch.testing.assert_close(enc.points(frame),
                                   enc._points_of(torch.full((1, 3, 32, 32), value / 255)))


def test_state_encoder_passes_state_through():
    enc = seeded(small_cfg(encoder="state"), state_dim=7)
    state = torch.randn(4, 7)
    assert enc.out_dim == 7
    assert enc(random_obs(4), None, state) is state
    with pytest.raises(ValueError, match="state"):
        enc(random_obs(4))
    with pytest.raises(ValueError):
        make_encoder(small_cfg(encoder="state"), (6, 32, 32), 0)


def test_clear_errors_on_bad_configuration_and_input():
    with pytest.raises(ValueError, match="frame stack of 2"):
        make_encoder(small_cfg(frame_stack=3), (9, 32, 32))
    with pytest.raises(ValueError, match="encoder"):
        make_encoder(small_cfg(encoder="nope"), (6, 32, 32))
    enc = seeded(small_cfg())
    with pytest.raises(TypeError, match="uint8"):
        enc(random_obs(1).float())
    with pytest.raises(ValueError, match="observations"):
        enc(random_obs(1, 40, 32))
