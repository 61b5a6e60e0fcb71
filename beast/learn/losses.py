"""The three IMPALA losses (Espeholt et al. 2018, section 4.2) and reward clipping.

The paper's update direction is the sum of three gradients: the policy gradient weighted by the V-trace advantage,
the value regression towards the V-trace targets, and an entropy bonus. As in TorchBeast, each loss is a *sum* over
the `[T, B]` steps (not a mean), so the learning rate, the costs and the gradient-clipping norm keep their
published meaning for a given T x B.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

REWARD_CLIPPING = ("abs_one", "none")


def clip_rewards(rewards: torch.Tensor, mode: str) -> torch.Tensor:
    """Reward clipping before V-trace: `abs_one` clamps to [-1, 1] (the paper's Atari/DMLab choice), `none` keeps
    the (already shaped) reward. rewards: any shape; returns the same shape."""
    if mode == "abs_one":
        return torch.clamp(rewards, -1.0, 1.0)
    if mode == "none":
        return rewards
    raise ValueError(f"reward clipping {mode!r} is not one of {', '.join(REWARD_CLIPPING)}.")


def policy_gradient_loss(target_action_log_probs: torch.Tensor, pg_advantages: torch.Tensor) -> torch.Tensor:
    """-sum_t rho^pg_t A_t log pi(a_t|x_t): descending it ascends the V-trace policy gradient.

    target_action_log_probs: `[T, B]` log pi(a_t|x_t) with gradient; pg_advantages: `[T, B]`, already rho-clipped
    by V-trace and treated as a constant. Returns a scalar.
    """
    return -(target_action_log_probs * pg_advantages.detach()).sum()


def baseline_loss(vs: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """0.5 * sum_t (v_t - V(x_t))^2: regression of the critic onto the V-trace targets.

    vs: `[T, B]` targets (constant); values: `[T, B]` V(x_t) with gradient. Returns a scalar (unweighted; the
    learner multiplies by `baseline_cost`).
    """
    return 0.5 * ((vs.detach() - values) ** 2).sum()


def entropy_loss(policy_logits: torch.Tensor) -> torch.Tensor:
    """sum_t sum_a pi(a|x_t) log pi(a|x_t), the *negative* entropy: minimising it raises the entropy (the bonus).

    policy_logits: `[T, B, A]` target logits. Returns a scalar (unweighted; the learner multiplies by
    `entropy_cost`).
    """
    log_policy = F.log_softmax(policy_logits, dim=-1)
    return (log_policy.exp() * log_policy).sum()
