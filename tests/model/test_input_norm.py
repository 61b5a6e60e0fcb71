"""The vision input's running normalisation: pooled statistics, their use, and the union over ranks."""

from __future__ import annotations

import torch

from beast.model.input_norm import CLIP, InputNorm


def frames(n: int, seed: int, scale: float, shift: float) -> torch.Tensor:
    return shift + scale * torch.rand(n, 2, 3, 3, generator=torch.Generator().manual_seed(seed))


def test_batches_merged_one_by_one_give_the_statistics_of_all_their_frames() -> None:
    norm = InputNorm((2, 3, 3))
    batches = [frames(5, 0, 1.0, 0.0), frames(11, 1, 0.2, 0.7), frames(3, 2, 3.0, -1.0)]
    for batch in batches:
        norm.update(batch)
    whole = torch.cat(batches)
    assert float(norm.count) == 19
    torch.testing.assert_close(norm.mean, whole.mean(dim=0))
    torch.testing.assert_close(norm.var, whole.var(dim=0, unbiased=False))


def test_the_frames_it_was_fed_come_out_centred_and_unit_scaled_a_constant_pixel_as_zero() -> None:
    norm = InputNorm((2, 3, 3))
    batch = frames(64, 3, 2.0, 5.0)
    batch[:, 1, 2, 2] = 0.25  # a pixel that never changes (the sky)
    norm.update(batch)
    out = norm(batch)
    torch.testing.assert_close(out.mean(dim=0), torch.zeros(2, 3, 3), atol=1e-5, rtol=0)
    std = out.std(dim=0, unbiased=False)
    std[1, 2, 2] = 1.0
    torch.testing.assert_close(std, torch.ones(2, 3, 3), atol=1e-3, rtol=0)
    assert torch.equal(out[:, 1, 2, 2], torch.zeros(64))
    # Something new at the constant pixel (a medkit under the sky) is at most CLIP sigmas out.
    odd = batch[:1].clone()
    odd[0, 1, 2, 2] = 1.0
    assert float(norm(odd)[0, 1, 2, 2]) == CLIP


def test_with_the_ranks_sum_each_rank_holds_the_statistics_of_both_ranks_frames() -> None:
    mine, theirs = frames(8, 4, 1.0, 0.0), frames(5, 5, 0.5, 2.0)

    def sum_with_the_other_rank(sums: torch.Tensor) -> torch.Tensor:
        return sums + torch.stack([torch.full_like(theirs[0], 5), theirs.sum(dim=0), (theirs * theirs).sum(dim=0)])

    norm = InputNorm((2, 3, 3))
    norm.update(mine, total=sum_with_the_other_rank)
    norm.update(mine, total=sum_with_the_other_rank)
    both = torch.cat([mine, theirs, mine, theirs])
    assert float(norm.count) == 26
    torch.testing.assert_close(norm.mean, both.mean(dim=0))
    torch.testing.assert_close(norm.var, both.var(dim=0, unbiased=False), atol=1e-6, rtol=1e-5)
