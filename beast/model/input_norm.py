"""Running per-pixel normalisation of the vision input (`--normalize-input`), as Sample Factory's `normalize_input`.

Why: on health_gathering_supreme Sample Factory 2.1.1 learns with it (its Doom default: survival 389 -> 897 tics in
3.3M frames at 64x64) and stays at random's survival without it (docs/training.md). Each of the 4 x 64 x 64 inputs
(RGB and depth) is shifted and scaled by its own running mean and variance over the frames trained on, then
clipped to +-5 standard deviations: what is the same in every frame at that pixel (the floor's colour low on the
screen, the sky high up) goes to ~0, and what is rare where it appears (a medkit on the acid floor) stands out.

The statistics are buffers, so checkpoints and the acting copy (`load_state_dict` on publish) carry them. Only the
learner moves them: the frames of its batch are merged in before its forward (`update`, the exact pooled mean
and variance of all frames so far: Chan et al.'s parallel update), so at first they follow the inputs quickly and
later hardly move, as the policy's inputs need.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

CLIP = 5.0  # standard deviations (Sample Factory's clip)
EPS = 1e-5  # a pixel that never varied maps to 0, not to infinity


class InputNorm(nn.Module):
    """`(x - mean) / sqrt(var + eps)`, clipped, per element of a [*shape] input; `update` merges a batch in."""

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("var", torch.ones(shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))  # frames merged in so far

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, *shape] float -> normalised, in x's dtype."""
        mean, std = self.mean.to(x.dtype), torch.sqrt(self.var + EPS).to(x.dtype)
        return ((x - mean) / std).clamp(-CLIP, CLIP)

    @torch.no_grad()
    def update(self, x: torch.Tensor, total: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Merge the N frames of x [N, *shape] into the statistics. `total` (synchronous learners: the sum over
        the ranks) makes the batch the union of every rank's, so that each rank holds the statistics one learner
        would on all of them."""
        x = x.detach().to(torch.float32)
        sums = torch.stack([torch.full_like(x[0], x.shape[0]), x.sum(dim=0), (x * x).sum(dim=0)])
        if total is not None:
            sums = total(sums)
        frames, batch_sum, batch_square = sums
        n = frames.flatten()[0].to(torch.float64)
        batch_mean = batch_sum / frames
        batch_var = (batch_square / frames - batch_mean**2).clamp(min=0.0)
        weight = (n / (self.count + n)).to(torch.float32)  # the batch's share of all frames so far
        delta = batch_mean - self.mean
        self.var.copy_((1 - weight) * self.var + weight * batch_var + weight * (1 - weight) * delta**2)
        self.mean.add_(weight * delta)
        self.count.add_(n)
