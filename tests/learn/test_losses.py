"""The three losses, checked against their definitions and their gradients."""

from __future__ import annotations

import math

import pytest
import torch

from beast.learn import losses


def test_policy_gradient_loss_is_advantage_weighted_log_likelihood() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    actions = torch.randint(0, 5, (4, 3), generator=gen)
    advantages = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    log_pi = torch.log_softmax(logits, -1).gather(-1, actions[..., None])[..., 0]
    loss = losses.policy_gradient_loss(log_pi, advantages)
    torch.testing.assert_close(loss, -(log_pi * advantages).sum())
    loss.backward()
    # d(-A log softmax(z)[a]) / dz = -A (onehot(a) - softmax(z)); the advantage is a constant.
    onehot = torch.nn.functional.one_hot(actions, 5).double()
    expected = -advantages.detach()[..., None] * (onehot - torch.softmax(logits.detach(), -1))
    torch.testing.assert_close(logits.grad, expected)
    assert advantages.grad is None


def test_normalized_advantages_have_zero_mean_unit_std_and_the_ranks_moments_when_averaged() -> None:
    gen = torch.Generator().manual_seed(3)
    a, b = 3.0 + 0.2 * torch.randn(6, 4, generator=gen), -1.0 + 5.0 * torch.randn(6, 4, generator=gen)
    for x in (a, b):
        n = losses.normalized(x)
        torch.testing.assert_close(n.mean(), torch.tensor(0.0), atol=1e-6, rtol=0)
        torch.testing.assert_close(n.pow(2).mean(), torch.tensor(1.0))  # the population std

    # Two synchronous ranks, one batch each: both scale by the moments of the two batches together.
    def average(moments: torch.Tensor) -> torch.Tensor:  # a stand-in for the ranks' all-reduce mean
        return torch.stack([torch.stack([x.mean(), x.pow(2).mean()]) for x in (a, b)]).mean(0)

    together = losses.normalized(torch.cat([a, b]))
    torch.testing.assert_close(torch.cat([losses.normalized(a, average), losses.normalized(b, average)]), together)
    assert torch.equal(losses.normalized(torch.full((3, 2), 7.0)), torch.zeros(3, 2))


def test_baseline_loss_is_half_squared_error_with_constant_targets() -> None:
    gen = torch.Generator().manual_seed(1)
    vs = torch.randn(5, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    values = torch.randn(5, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    loss = losses.baseline_loss(vs, values)
    torch.testing.assert_close(loss, 0.5 * ((vs - values) ** 2).sum())
    loss.backward()
    torch.testing.assert_close(values.grad, (values - vs).detach())
    assert vs.grad is None


def test_entropy_loss_is_negative_entropy_and_descent_raises_entropy() -> None:
    T, B, A = 3, 2, 4
    uniform = torch.zeros(T, B, A)
    assert losses.entropy_loss(uniform).item() == pytest.approx(-T * B * math.log(A), rel=1e-6)

    logits = torch.randn(T, B, A, generator=torch.Generator().manual_seed(2)).mul(3).requires_grad_(True)
    probs = torch.softmax(logits.detach(), -1)
    entropy = -(probs * probs.log()).sum()
    loss = losses.entropy_loss(logits)
    assert loss.item() == pytest.approx(-entropy.item(), rel=1e-5)
    loss.backward()
    stepped = logits.detach() - 0.01 * logits.grad
    assert -losses.entropy_loss(stepped).item() > entropy.item()


def test_symmetric_kl_to_uniform_is_both_kls_and_pulls_harder_as_the_policy_collapses() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 3, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    loss = losses.symmetric_kl_to_uniform_loss(logits)
    pi = torch.softmax(logits, -1)
    u = torch.full_like(pi, 1 / 6)
    both = (pi * (pi.log() - u.log())).sum() + (u * (u.log() - pi.log())).sum()
    torch.testing.assert_close(loss, both)
    # Near-deterministic policies: the entropy's gradient fades, the symmetric KL's does not.
    sharp = torch.tensor([[[12.0, 0.0, 0.0, 0.0]]], dtype=torch.float64, requires_grad=True)
    (entropy_grad,) = torch.autograd.grad(losses.entropy_loss(sharp), sharp)
    (kl_grad,) = torch.autograd.grad(losses.symmetric_kl_to_uniform_loss(sharp), sharp)
    assert entropy_grad.abs().max() < 1e-3
    assert kl_grad.abs().max() > 0.5
    assert set(losses.EXPLORATION_LOSSES) == {"entropy", "symmetric_kl"}
