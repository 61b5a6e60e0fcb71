"""What the learner measures besides its losses (seed 000, "Quick Diagnosis" and "Final outputs & Indicators").

The seed diagnosed its failure from three kinds of signal, and these functions produce them:
- gradient norms per model block (a shock in one block precedes instability; a dead actor head shows up as a
  zero policy-head norm) and per loss on the shared parameters (one loss dominating the others means its cost
  is mis-set);
- mean log pi(a) and log mu(a) (all action probabilities pressed down) with the importance-ratio statistics;
- policy lag, the price IMPALA pays for never waiting: how many updates the acting weights trail the learner.

Values are returned as 0-d tensors so the learner can fetch them all in one device synchronisation.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def per_loss_grad_norms(
    losses: Mapping[str, torch.Tensor], params: list[torch.nn.Parameter]
) -> dict[str, torch.Tensor]:
    """`{loss: ||d loss / d params||}`: the gradient each (weighted) loss alone puts on `params`.

    Meant for the shared parameters, where the losses compete. Uses `autograd.grad` with `retain_graph=True`, so
    the graph survives for the learner's own backward pass; costs one extra backward per loss, hence it runs only
    every `loss_grad_norm_interval` steps. A loss that does not reach `params` at all gets norm 0.
    """
    norms: dict[str, torch.Tensor] = {}
    for name, loss in losses.items():
        if not loss.requires_grad:
            norms[name] = torch.zeros((), device=loss.device)
            continue
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        present = [torch.linalg.vector_norm(g) for g in grads if g is not None]
        norms[name] = torch.linalg.vector_norm(torch.stack(present)) if present else torch.zeros((), device=loss.device)
    return norms


def policy_lag(learner_version: int, behaviour_versions: torch.Tensor) -> dict[str, torch.Tensor]:
    """Updates by which the acting weights trailed the learner: `learner_version - policy_version` per step.

    behaviour_versions: `[T, B]` int64, the version recorded with each action. Returns mean and max (0-d).
    """
    lag = (learner_version - behaviour_versions).to(torch.float32)
    return {"mean": lag.mean(), "max": lag.max()}


def rho_stats(
    log_rhos: torch.Tensor, clip_rho_threshold: float | None, clip_pg_rho_threshold: float | None
) -> dict[str, torch.Tensor]:
    """Statistics of the importance ratios rho = pi(a|x) / mu(a|x), `log_rhos [T, B]`.

    `clipped_frac` is the fraction of steps whose rho exceeds rho_bar (truncated in the targets), `pg_clipped_frac`
    the same for the policy-gradient threshold. Far from 1 on average means the behaviour policy is stale.
    """
    rhos = torch.exp(log_rhos.detach())
    stats = {"mean": rhos.mean(), "min": rhos.min(), "max": rhos.max()}
    for key, threshold in (("clipped_frac", clip_rho_threshold), ("pg_clipped_frac", clip_pg_rho_threshold)):
        stats[key] = (
            torch.zeros((), device=rhos.device) if threshold is None else (rhos > threshold).to(torch.float32).mean()
        )
    return stats


def mean_std(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (population) standard deviation of any tensor, detached; std is 0 for a single element."""
    values = values.detach().to(torch.float32)
    return values.mean(), values.std(correction=0)


def explained_variance(targets: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """1 - Var(targets - predictions) / Var(targets): 1 for a perfect critic, 0 for one no better than a constant,
    negative for worse. 0 when the targets have no variance."""
    targets = targets.detach()
    var = targets.var(correction=0)
    residual = (targets - predictions.detach()).var(correction=0)
    return torch.where(var > 0, 1.0 - residual / var.clamp_min(1e-12), torch.zeros_like(var))
