"""Gradient norms per block and per loss, policy lag and importance-ratio statistics."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from beast.learn import diagnostics


def two_blocks() -> tuple[nn.Linear, nn.Linear]:
    torch.manual_seed(0)
    return nn.Linear(4, 3), nn.Linear(3, 2)


def test_per_loss_grad_norms_match_separate_backward_passes_and_keep_the_graph() -> None:
    first, second = two_blocks()
    out = second(torch.relu(first(torch.randn(5, 4))))
    loss_a, loss_b = out[:, 0].pow(2).sum(), 3.0 * out[:, 1].sum()
    unrelated = nn.Parameter(torch.ones(2)).sum()
    shared = list(first.parameters())
    norms = diagnostics.per_loss_grad_norms({"a": loss_a, "b": loss_b, "unused": unrelated}, shared)
    for name, loss in (("a", loss_a), ("b", loss_b)):
        grads = torch.autograd.grad(loss, shared, retain_graph=True)
        assert norms[name].item() == pytest.approx(torch.cat([g.flatten() for g in grads]).norm().item(), rel=1e-6)
    assert norms["unused"].item() == 0.0
    (loss_a + loss_b).backward()  # the graph is still there for the learner's own pass
    assert all(p.grad is not None for p in shared)


def test_policy_lag_is_learner_version_minus_behaviour_version() -> None:
    versions = torch.tensor([[7, 9], [10, 10], [8, 6]])
    lag = diagnostics.policy_lag(10, versions)
    assert lag["mean"].item() == pytest.approx((3 + 1 + 0 + 0 + 2 + 4) / 6)
    assert lag["max"].item() == 4


def test_rho_stats_count_the_truncated_ratios() -> None:
    rhos = torch.tensor([[0.5, 1.0], [1.5, 3.0]])
    stats = diagnostics.rho_stats(rhos.log(), clip_rho_threshold=1.0, clip_pg_rho_threshold=2.0)
    assert stats["mean"].item() == pytest.approx(1.5)
    assert stats["min"].item() == pytest.approx(0.5)
    assert stats["max"].item() == pytest.approx(3.0)
    assert stats["clipped_frac"].item() == pytest.approx(0.5)
    assert stats["pg_clipped_frac"].item() == pytest.approx(0.25)
    assert diagnostics.rho_stats(rhos.log(), None, None)["clipped_frac"].item() == 0.0


def test_explained_variance_of_perfect_constant_and_worse_critics() -> None:
    targets = torch.tensor([1.0, -2.0, 3.0, 0.5])
    assert diagnostics.explained_variance(targets, targets).item() == pytest.approx(1.0)
    assert diagnostics.explained_variance(targets, torch.full_like(targets, targets.mean())).item() == pytest.approx(
        0.0, abs=1e-6
    )
    assert diagnostics.explained_variance(targets, -targets).item() < 0
    assert not math.isnan(diagnostics.explained_variance(torch.ones(3), torch.zeros(3)).item())
