"""A strided conv computed as a stride-1 conv over space-to-depth blocks: the same function and parameters.

An 8x8 conv of stride 4 reads each output pixel's window as 2x2 blocks of 4x4 pixels. Moving each 4x4 block of
the input into 16 channels (space to depth) and the weight's matching taps alongside them turns it into a 2x2
conv of stride 1 over 16x as many channels. oneDNN computes the weight gradient of the original form poorly when
the input has few channels: the enemy mask's conv (1 channel in, 64 out, 64x64 -> 15x15) took 365 ms of a 1.6-s
CPU learner step (fp32, T=32, B=32) for its weight gradient alone, 3.3x its forward; as blocks, 54 ms, and the
forward 78 ms instead of 112 (docs/benchmarks.md, "The mask conv as blocks"). The weight keeps nn.Conv2d's shape
[out, in, k, k], so checkpoints, initialisation and anything reading the weight see an ordinary conv.

It pays where the input has few channels: the RGB-D conv (4 channels in) is not faster this way, its forward
slower by the rearranging copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def space_to_depth(x: torch.Tensor, block: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, C * block^2, H / block, W / block]: channel (c, p, q) of block (i, j) holds pixel
    (block * i + p, block * j + q) of channel c. A copy (the permutation is not a view of a contiguous tensor)."""
    n, c, h, w = x.shape
    blocks = x.view(n, c, h // block, block, w // block, block).permute(0, 1, 3, 5, 2, 4)
    return blocks.reshape(n, c * block * block, h // block, w // block)


class SpaceToDepthConv2d(nn.Conv2d):
    """nn.Conv2d(in, out, kernel, stride) with no padding, for a kernel that is a multiple of the stride and inputs
    whose sides are too; computed as a stride-1 conv of the blocks (the module docstring says why)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        if kernel_size % stride:
            raise ValueError(
                f"SpaceToDepthConv2d needs a kernel that is a multiple of the stride, got kernel {kernel_size} "
                f"and stride {stride}: use nn.Conv2d for this layer."
            )
        super().__init__(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride[0]
        if x.shape[-2] % s or x.shape[-1] % s:
            raise ValueError(
                f"SpaceToDepthConv2d with stride {s} needs input sides that are multiples of it, got "
                f"{tuple(x.shape[-2:])}."
            )
        # The weight's taps go into blocks exactly as the pixels they meet: tap (s*a + p, s*b + q) of channel c is
        # channel (c, p, q) of block (a, b).
        return F.conv2d(space_to_depth(x, s), space_to_depth(self.weight, s), self.bias)
