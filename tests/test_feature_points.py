"""Feature points (eq. 1-3, Listing 1) against hand-computed values."""
import math

import pytest
import torch

from fpac_async.agent.feature_points import (listing1_feature_points, separable_feature_points,
                                             spatial_softmax_feature_points)

VARIANTS = [separable_feature_points, spatial_softmax_feature_points]


def grid_value(i: int, n: int) -> float:
    """The i-th point of linspace(-1, 1, n)."""
    return -1.0 + 2.0 * i / (n - 1)


@pytest.mark.parametrize("fn", VARIANTS)
@pytest.mark.parametrize("height,width,row,col", [(7, 7, 2, 5), (5, 9, 4, 1), (9, 4, 0, 3)])
def test_hot_pixel_lands_on_its_grid_coordinate(fn, height, width, row, col, device):
    maps = torch.zeros(1, 2, height, width, device=device)
    maps[0, 0, row, col] = 1e4  # one-hot after softmax at any temperature we use
    maps[0, 1, height - 1, 0] = 1e4
    out = fn(maps, 0.5)
    assert out.shape == (1, 2, 3)
    expected = torch.tensor([[grid_value(col, width), grid_value(row, height),
                              math.tanh(1e4 / (height * width))],
                             [-1.0, 1.0, math.tanh(1e4 / (height * width))]], device=device)
    torch.testing.assert_close(out[0], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("fn", VARIANTS)
@pytest.mark.parametrize("value", [-0.7, 0.0, 0.3, 2.5])
def test_uniform_map_is_centred_with_tanh_of_value(fn, value):
    maps = torch.full((3, 4, 6, 11), value)
    out = fn(maps, 0.5)
    torch.testing.assert_close(out[..., :2], torch.zeros(3, 4, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[..., 2], torch.full((3, 4), math.tanh(value)))


@pytest.mark.parametrize("fn", VARIANTS)
def test_two_column_map_matches_closed_form(fn):
    # Columns valued 0 and 1: p = softmax([0, 1] / beta) on the grid (-1, 1), so
    # x = p1 - p0 = tanh(1 / (2 beta)); rows are equal so y = 0; m = tanh(mean) = tanh(0.5).
    maps = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    for beta in (0.5, 0.25, 2.0):
        out = fn(maps, beta)[0, 0]
        torch.testing.assert_close(out, torch.tensor([math.tanh(1 / (2 * beta)), 0.0,
                                                      math.tanh(0.5)]))


def test_scalar_feature_is_tanh_of_mean_not_mean_of_tanh():
    maps = torch.tensor([[3.0, -1.0], [0.0, 0.0]]).view(1, 1, 2, 2)  # mean 0.5
    for fn in VARIANTS:
        assert fn(maps)[0, 0, 2].item() == pytest.approx(math.tanh(0.5), abs=1e-6)
    listing_m = (math.tanh(3.0) + math.tanh(-1.0)) / 4
    assert listing1_feature_points(maps, 0.5)[0, 0, 2].item() == pytest.approx(listing_m, abs=1e-6)


def test_variants_agree_on_product_form_maps():
    # h(y, x) = a(y) + b(x): exp(h / beta) factorises, so the 2D softmax's marginals are exactly
    # the separable variant's 1D softmaxes of the pooled rows/columns.
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(2, 5, 8, 1, generator=gen, dtype=torch.float64)
    b = torch.randn(2, 5, 1, 13, generator=gen, dtype=torch.float64)
    maps = a + b
    for beta in (0.5, 1.3):
        torch.testing.assert_close(separable_feature_points(maps, beta),
                                   spatial_softmax_feature_points(maps, beta),
                                   atol=1e-10, rtol=1e-10)


def test_listing1_coordinates_equal_separable_on_square_maps():
    gen = torch.Generator().manual_seed(1)
    maps = torch.randn(3, 4, 9, 9, generator=gen)
    ours = separable_feature_points(maps, 0.5)
    listing = listing1_feature_points(maps, 0.5)
    torch.testing.assert_close(listing[..., :2], ours[..., :2])
    torch.testing.assert_close(listing[..., 2], torch.tanh(maps).mean((-1, -2)))


@pytest.mark.parametrize("fn", VARIANTS)
def test_large_logits_give_finite_values_and_gradients(fn, device):
    gen = torch.Generator().manual_seed(2)
    maps = (torch.randn(2, 3, 7, 5, generator=gen) * 1e4).to(device).requires_grad_()
    out = fn(maps, 0.5)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert maps.grad is not None and torch.isfinite(maps.grad).all()


@pytest.mark.parametrize("fn", VARIANTS)
def test_gradient_reaches_the_maps_and_is_correct(fn, device):
    gen = torch.Generator().manual_seed(3)
    maps = torch.randn(2, 2, 4, 5, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    assert torch.autograd.gradcheck(lambda m: fn(m, 0.5), (maps,))
    fn(maps, 0.5)[..., :2].sum().backward()  # coordinates alone must move the maps too
    assert maps.grad is not None and maps.grad.abs().sum() > 0


@pytest.mark.parametrize("fn", VARIANTS)
def test_leading_dimensions_are_kept(fn, device):
    gen = torch.Generator().manual_seed(4)
    maps = torch.randn(2, 3, 4, 6, 7, generator=gen).to(device)
    out = fn(maps, 0.5)
    assert out.shape == (2, 3, 4, 3)
    torch.testing.assert_close(out[1, 2], fn(maps[1, 2], 0.5))


@pytest.mark.parametrize("fn", VARIANTS)
def test_scriptable_and_equal_to_eager(fn):
    scripted = torch.jit.script(fn)
    maps = torch.randn(2, 3, 6, 8, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(scripted(maps, 0.5), fn(maps, 0.5))


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        separable_feature_points(torch.zeros(4, 4))
    with pytest.raises(TypeError):
        spatial_softmax_feature_points(torch.zeros(1, 4, 4, dtype=torch.long))


def test_separable_channels_last_maps_give_same_points_and_gradients(device):
    gen = torch.Generator().manual_seed(6)
    maps = torch.randn(2, 3, 5, 5, generator=gen, dtype=torch.float64).to(device)
    cl = maps.contiguous(memory_format=torch.channels_last).requires_grad_()
    plain = maps.clone().requires_grad_()
    torch.testing.assert_close(separable_feature_points(cl), separable_feature_points(plain))
    assert torch.autograd.gradcheck(separable_feature_points, (cl,))
