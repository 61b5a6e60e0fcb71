"""V-trace off-policy targets (Espeholt et al. 2018, section 4.1), with TorchBeast / scalable_agent semantics.

For a trajectory x_s, a_s, r_s of the behaviour policy mu and a target policy pi, with ratios
rho_t = min(rho_bar, pi(a_t|x_t) / mu(a_t|x_t)) and c_i = min(1, pi(a_i|x_i) / mu(a_i|x_i)), the n-step target is

    v_s = V(x_s) + sum_{t=s}^{s+n-1} gamma^{t-s} (prod_{i=s}^{t-1} c_i) delta_t V,
    delta_t V = rho_t (r_t + gamma V(x_{t+1}) - V(x_t)),

computed here by the backward recursion v_s - V(x_s) = delta_s V + gamma_s c_s (v_{s+1} - V(x_{s+1})). The policy
gradient uses the advantage rho^pg_s (r_s + gamma_s v_{s+1} - V(x_s)) with its own truncation rho^pg_bar.

Conventions, all tensors time-major:
- `[T, B]` for per-step quantities; `discounts[t]` is gamma * (1 - done after step t), so a 0 cuts the return at
  an episode end and concatenated episodes are independent.
- `bootstrap_value [B]` is V(x_T), the value of the state after the last step.
- Nothing returned carries gradient: V-trace produces *targets*, and the losses treat them as constants.
- c_bar is fixed at 1, as in the paper's experiments and both reference implementations; `lambda_` < 1 scales
  the traces, c_i = lambda * min(1, pi/mu) (the paper's remark 2, scalable_agent's `lambda_`), trading the n-step
  targets' variance for bias as GAE's lambda does.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class VTraceReturns(NamedTuple):
    vs: torch.Tensor  # [T, B] V-trace value targets v_s
    pg_advantages: torch.Tensor  # [T, B] rho^pg_s (r_s + gamma_s v_{s+1} - V(x_s))


class VTraceFromLogitsReturns(NamedTuple):
    vs: torch.Tensor  # [T, B]
    pg_advantages: torch.Tensor  # [T, B]
    log_rhos: torch.Tensor  # [T, B] log pi(a|x) - log mu(a|x)
    behavior_action_log_probs: torch.Tensor  # [T, B] log mu(a_t|x_t)
    target_action_log_probs: torch.Tensor  # [T, B] log pi(a_t|x_t); carries gradient (used by the pg loss)


def _check_rank(name: str, tensor: torch.Tensor, rank: int) -> None:
    if tensor.dim() != rank:
        raise ValueError(f"vtrace: {name} must have rank {rank}, got shape {tuple(tensor.shape)}.")


def action_log_probs(policy_logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log softmax(policy_logits)[a] at the chosen actions.

    policy_logits: `[T, B, A]`; actions: `[T, B]` int64. Returns `[T, B]`, differentiable w.r.t. the logits.
    """
    _check_rank("policy_logits", policy_logits, 3)
    _check_rank("actions", actions, 2)
    log_probs = F.log_softmax(policy_logits, dim=-1)
    return log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def from_importance_weights(
    log_rhos: torch.Tensor,
    discounts: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    clip_rho_threshold: float | None = 1.0,
    clip_pg_rho_threshold: float | None = 1.0,
    lambda_: float = 1.0,
) -> VTraceReturns:
    """V-trace targets from log importance weights log(pi(a_t|x_t) / mu(a_t|x_t)).

    log_rhos, discounts, rewards, values: `[T, B]`; bootstrap_value: `[B]`. A threshold of None disables that
    truncation. Returns `VTraceReturns(vs [T, B], pg_advantages [T, B])`, both without gradient.
    """
    for name, tensor in (("log_rhos", log_rhos), ("discounts", discounts), ("rewards", rewards), ("values", values)):
        _check_rank(name, tensor, 2)
    _check_rank("bootstrap_value", bootstrap_value, 1)

    rhos = torch.exp(log_rhos)
    clipped_rhos = rhos if clip_rho_threshold is None else torch.clamp(rhos, max=clip_rho_threshold)
    cs = lambda_ * torch.clamp(rhos, max=1.0)

    # V(x_{t+1}) for every t: the next row of values, and the bootstrap after the last step.
    values_t_plus_1 = torch.cat([values[1:], bootstrap_value.unsqueeze(0)], dim=0)
    deltas = clipped_rhos * (rewards + discounts * values_t_plus_1 - values)

    # Backward recursion over time; T is short (tens of steps), so a Python loop costs little next to the model.
    vs_minus_values = torch.empty_like(values)
    acc = torch.zeros_like(bootstrap_value)
    for t in range(values.shape[0] - 1, -1, -1):
        acc = deltas[t] + discounts[t] * cs[t] * acc
        vs_minus_values[t] = acc
    vs = vs_minus_values + values

    # The pg advantage bootstraps from the V-trace target of the next state, and from V(x_T) at the end.
    vs_t_plus_1 = torch.cat([vs[1:], bootstrap_value.unsqueeze(0)], dim=0)
    clipped_pg_rhos = rhos if clip_pg_rho_threshold is None else torch.clamp(rhos, max=clip_pg_rho_threshold)
    pg_advantages = clipped_pg_rhos * (rewards + discounts * vs_t_plus_1 - values)
    return VTraceReturns(vs=vs, pg_advantages=pg_advantages)


def from_logits(
    behavior_policy_logits: torch.Tensor,
    target_policy_logits: torch.Tensor,
    actions: torch.Tensor,
    discounts: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    clip_rho_threshold: float | None = 1.0,
    clip_pg_rho_threshold: float | None = 1.0,
    lambda_: float = 1.0,
) -> VTraceFromLogitsReturns:
    """V-trace for softmax policies given as logits.

    behavior_policy_logits (mu), target_policy_logits (pi): `[T, B, A]`; actions: `[T, B]` int64; the rest as in
    `from_importance_weights`. The target log-probabilities keep their gradient so the policy-gradient loss can
    use them; everything else is a constant.
    """
    _check_rank("behavior_policy_logits", behavior_policy_logits, 3)
    _check_rank("target_policy_logits", target_policy_logits, 3)
    _check_rank("actions", actions, 2)
    target_action_log_probs = action_log_probs(target_policy_logits, actions)
    behavior_action_log_probs = action_log_probs(behavior_policy_logits, actions)
    log_rhos = (target_action_log_probs - behavior_action_log_probs).detach()
    returns = from_importance_weights(
        log_rhos=log_rhos,
        discounts=discounts,
        rewards=rewards,
        values=values,
        bootstrap_value=bootstrap_value,
        clip_rho_threshold=clip_rho_threshold,
        clip_pg_rho_threshold=clip_pg_rho_threshold,
        lambda_=lambda_,
    )
    return VTraceFromLogitsReturns(
        vs=returns.vs,
        pg_advantages=returns.pg_advantages,
        log_rhos=log_rhos,
        behavior_action_log_probs=behavior_action_log_probs,
        target_action_log_probs=target_action_log_probs,
    )
