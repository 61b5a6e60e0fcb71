"""The three IMPALA losses (Espeholt et al. 2018, section 4.2).

The paper's update direction is the sum of three gradients: the policy gradient weighted by the V-trace advantage,
the value regression towards the V-trace targets, and an entropy bonus. As in TorchBeast, each loss is a *sum* over
the `[T, B]` steps (not a mean), so the learning rate, the costs and the gradient-clipping norm keep their
published meaning for a given T x B.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def policy_gradient_loss(target_action_log_probs: torch.Tensor, pg_advantages: torch.Tensor) -> torch.Tensor:
    """-sum_t rho^pg_t A_t log pi(a_t|x_t): descending it ascends the V-trace policy gradient.

    target_action_log_probs: `[T, B]` log pi(a_t|x_t) with gradient; pg_advantages: `[T, B]`, already rho-clipped
    by V-trace and treated as a constant. Returns a scalar.
    """
    return -(target_action_log_probs * pg_advantages.detach()).sum()


def normalized(advantages: torch.Tensor, average: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """`(A - mean) / std` over the batch (`average`: the mean over synchronous ranks, so that all of them scale by
    the moments of the batches together); std floored at 1e-6, so a batch of equal advantages gives zeros."""
    moments = torch.stack([advantages.mean(), advantages.pow(2).mean()])
    if average is not None:
        moments = average(moments)
    mean, second = moments[0], moments[1]
    std = (second - mean.pow(2)).clamp_min(0.0).sqrt().clamp_min(1e-6)
    return (advantages - mean) / std


def baseline_loss(vs: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """0.5 * sum_t (v_t - V(x_t))^2: regression of the critic onto the V-trace targets (both PopArt-normalised
    when the learner normalises them).

    vs: `[T, B]` targets (constant); values: `[T, B]` V(x_t) with gradient. Returns a scalar (unweighted; the
    learner multiplies by `baseline_cost`).
    """
    return 0.5 * ((vs.detach() - values) ** 2).sum()


def symmetric_kl_to_uniform_loss(policy_logits: torch.Tensor, available: torch.Tensor | None = None) -> torch.Tensor:
    """sum_t [KL(pi || u) + KL(u || pi)] with u uniform: sum_t sum_a (pi(a) - 1/A) log pi(a|x_t) (the log A terms
    cancel). Sample Factory's exploration loss for Doom.

    Why not the entropy alone: the entropy's gradient vanishes as the policy becomes deterministic, so once one
    action pays reliably (deadly_corridor's forward) nothing pulls the others back and the policy collapses onto
    it. KL(u || pi)'s gradient with respect to the logits is pi - u, which grows, rather than fades, as any action's
    probability goes to zero. policy_logits: `[T, B, A]`. `available` `[T, B, A]` bool (a multi-task model's mask):
    u is uniform over each step's available actions and the masked ones, whose probability is 0 by construction,
    are left out (their log pi is a huge constant that would otherwise swamp the loss). Returns a scalar
    (unweighted).
    """
    log_policy = F.log_softmax(policy_logits, dim=-1)
    if available is None:
        return ((log_policy.exp() - 1.0 / policy_logits.shape[-1]) * log_policy).sum()
    mask = available.to(log_policy.dtype)
    uniform = mask / mask.sum(dim=-1, keepdim=True)
    return ((log_policy.exp() - uniform) * log_policy * mask).sum()


def entropy_loss(policy_logits: torch.Tensor, available: torch.Tensor | None = None) -> torch.Tensor:
    """sum_t sum_a pi(a|x_t) log pi(a|x_t), the *negative* entropy: minimising it raises the entropy (the bonus).

    policy_logits: `[T, B, A]` target logits. Returns a scalar (unweighted; the learner multiplies by
    `entropy_cost`). `available` changes nothing: a masked action's probability is exactly 0 and so is its term.
    """
    log_policy = F.log_softmax(policy_logits, dim=-1)
    return (log_policy.exp() * log_policy).sum()


# `--exploration-loss`: the third loss of the update, weighted by `entropy_cost`.
EXPLORATION_LOSSES = {"entropy": entropy_loss, "symmetric_kl": symmetric_kl_to_uniform_loss}
