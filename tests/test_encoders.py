"""Encoders: shapes for every option, state assembly by hand, camera offset, TorchScript."""
import itertools

import pytest
import torch

from fpac_async.config import AgentConfig
from fpac_async.encoders import conv_output_size, make_encoder

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


def test_relative_points_have_zero_mean_and_keep_m():
    obs = random_obs(5)
    rel = seeded(small_cfg(relative=True)).points(obs[:, 3:])
    absolute = seeded(small_cfg(relative=False)).points(obs[:, 3:])
    torch.testing.assert_close(rel[..., :2].mean(1), torch.zeros(5, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(rel[..., :2], absolute[..., :2] - absolute[..., :2].mean(1, True))
    torch.testing.assert_close(rel[..., 2], absolute[..., 2])


@pytest.mark.parametrize("softmax", ["separable", "spatial"])
def test_state_is_points_and_velocity_by_hand(softmax):
    enc = seeded(small_cfg(softmax=softmax))
    obs = random_obs(4)
    x_t = enc.points(obs[:, 3:])  # newest frame: channels [-3:]
    x_prev = enc.points(obs[:, :3])
    expected = torch.cat([x_t.flatten(1), (x_t - x_prev).flatten(1)], 1)
    torch.testing.assert_close(enc(obs), expected)
    assert not torch.allclose(x_t, x_prev)  # the frames differ, so the test can fail


def test_without_velocity_state_is_newest_points():
    enc = seeded(small_cfg(velocity=False))
    obs = random_obs(2)
    torch.testing.assert_close(enc(obs), enc.points(obs[:, 3:]).flatten(1))


def test_camera_offset_shifts_previous_points_exactly():
    # 40 wide, 32 high: a pixel is 2/39 in x and 2/31 in y.
    enc = seeded(small_cfg(camera_offset=True), (6, 32, 40))
    x_t = torch.zeros(2, K, 3)
    x_prev = torch.zeros(2, K, 3)
    x_prev[..., 2] = 0.25
    cam = torch.tensor([[3.0, -2.0], [0.0, 1.5]])
    state = enc.state_from_points(x_t, x_prev, cam)
    velocity = state[:, 3 * K:].view(2, K, 3)
    expected = torch.tensor([[-3.0 * 2 / 39, 2.0 * 2 / 31, -0.25],
                             [0.0, -1.5 * 2 / 31, -0.25]])
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


def test_pixels_encoder_shape_and_range():
    enc = seeded(small_cfg(encoder="pixels"), (6, 84, 84))
    out = enc(random_obs(2, 84, 84))
    assert enc.out_dim == 16 and out.shape == (2, 16)
    assert out.abs().max() < 1.0  # tanh head
    assert enc.convs[0].in_channels == 6
    assert enc.head[0].in_features == 8 * 35 * 35


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
