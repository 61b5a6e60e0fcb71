"""The space-to-depth conv is the strided conv it replaces: the same outputs and gradients from the same weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from beast.model.space_to_depth import SpaceToDepthConv2d, space_to_depth


@pytest.mark.parametrize(("in_channels", "kernel", "stride", "side"), [(1, 8, 4, 64), (4, 8, 4, 64), (3, 4, 2, 10)])
def test_outputs_and_gradients_equal_the_strided_conv(in_channels, kernel, stride, side):
    torch.manual_seed(0)
    conv = SpaceToDepthConv2d(in_channels, 16, kernel_size=kernel, stride=stride)
    x = torch.rand(5, in_channels, side, side, requires_grad=True)
    ours = conv(x)
    reference = F.conv2d(x, conv.weight, conv.bias, stride=stride)
    torch.testing.assert_close(ours, reference)
    upstream = torch.randn_like(reference)
    ours_grads = torch.autograd.grad(ours, (x, conv.weight, conv.bias), upstream)
    reference_grads = torch.autograd.grad(reference, (x, conv.weight, conv.bias), upstream)
    for got, want in zip(ours_grads, reference_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_its_parameters_are_those_of_the_conv_it_replaces():
    """Checkpoints of an nn.Conv2d load into it and back: the same names and shapes."""
    plain = torch.nn.Conv2d(1, 64, kernel_size=8, stride=4)
    ours = SpaceToDepthConv2d(1, 64, kernel_size=8, stride=4)
    ours.load_state_dict(plain.state_dict())
    x = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(ours(x), plain(x))


def test_space_to_depth_moves_each_block_into_the_channels():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    blocks = space_to_depth(x, 2)
    assert blocks.shape == (1, 8, 2, 2)
    # channel (c, p, q) of block (i, j) is pixel (2i + p, 2j + q) of channel c
    for c in range(2):
        for p in range(2):
            for q in range(2):
                assert torch.equal(blocks[0, c * 4 + p * 2 + q], x[0, c, p::2, q::2])


def test_a_geometry_it_cannot_compute_is_refused_with_the_alternative():
    with pytest.raises(ValueError, match=r"multiple of the stride.*nn\.Conv2d"):
        SpaceToDepthConv2d(1, 8, kernel_size=3, stride=2)
    with pytest.raises(ValueError, match="multiples of it"):
        SpaceToDepthConv2d(1, 8, kernel_size=4, stride=2)(torch.rand(1, 1, 9, 10))
