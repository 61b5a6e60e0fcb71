"""PopArt: value targets normalised by running statistics, with outputs preserved when the statistics move.

van Hasselt et al. 2016 ("Learning values across many orders of magnitude") and Hessel et al. 2019 (PopArt on
IMPALA, one set of statistics per task). The critic's last layer outputs a *normalised* value `n`; the value is
`V = sigma * n + mu`, with `mu` and `sigma` the running mean and standard deviation of the V-trace targets. The
learner then regresses `n` onto `(v_s - mu) / sigma` and scales the policy-gradient advantage by `1 / sigma`, so
the size of the rewards (tens per step in deadly_corridor, thousands per episode) no longer sets the size of the
gradients: neither `--reward-scale` nor clipping has to be tuned per scenario.

"Preserving outputs precisely": whenever `mu, sigma` change to `mu', sigma'`, the last layer's weights and bias
are rescaled, `W' = W sigma / sigma'`, `b' = (sigma b + mu - mu') / sigma'`, so `V` for every input is exactly what
it was. Without that, every statistics update would shift all values at once.

Statistics step size: `max(beta, 1 / n)` at the n-th update, i.e. the running average of all batches until that
falls below `beta`, then an exponential average. Hessel et al. use beta = 3e-4 over billions of frames; a 2-core
run makes ~1,000 learner steps an hour, so the default is larger and the first steps need not wait for it.

The statistics are buffers of the model (so checkpoints and the acting copy carry them), one entry per task.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

SIGMA_MIN = 1e-4  # a batch of equal targets must not make sigma zero
SIGMA_MAX = 1e6


class PopArt(nn.Module):
    """Running `mu`, `sigma` per task [K]; `update` moves them, `preserve` rescales the critic's last layer."""

    mu: torch.Tensor
    nu: torch.Tensor
    count: torch.Tensor

    def __init__(self, num_tasks: int = 1, beta: float = 0.005) -> None:
        super().__init__()
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"PopArt beta must lie in (0, 1], got {beta}.")
        self.beta = beta
        self.register_buffer("mu", torch.zeros(num_tasks, dtype=torch.float64))
        self.register_buffer("nu", torch.ones(num_tasks, dtype=torch.float64))  # second moment E[v^2]
        self.register_buffer("count", torch.zeros(num_tasks, dtype=torch.int64))

    @property
    def sigma(self) -> torch.Tensor:
        return torch.sqrt(torch.clamp(self.nu - self.mu**2, min=SIGMA_MIN**2)).clamp(max=SIGMA_MAX)

    def denormalize(self, normalized: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """V = sigma[task] * n + mu[task]; `task` int64 of n's shape (None: task 0). Keeps n's dtype."""
        mu, sigma = self._at(task, normalized)
        return sigma * normalized + mu

    def normalize(self, values: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        mu, sigma = self._at(task, values)
        return (values - mu) / sigma

    @torch.no_grad()
    def update(
        self,
        targets: torch.Tensor,
        task: torch.Tensor | None = None,
        average: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """Move each task's statistics towards the mean and second moment of its targets in this batch.
        `average` (synchronous learners: the mean over the ranks) makes the batch the union of every rank's."""
        flat = targets.detach().reshape(-1).to(torch.float64)
        ids = torch.zeros_like(flat, dtype=torch.int64) if task is None else task.reshape(-1).to(flat.device)
        k = self.mu.shape[0]
        moments = torch.stack(
            [
                torch.bincount(ids, minlength=k).to(torch.float64),
                torch.bincount(ids, weights=flat, minlength=k),
                torch.bincount(ids, weights=flat * flat, minlength=k),
            ]
        )
        if average is not None:
            moments = average(moments)
        counts, sums, squares = moments
        seen = counts > 0
        denominator = torch.where(seen, counts, torch.ones_like(counts))  # averaged counts may be fractions
        mean, second = sums / denominator, squares / denominator
        step = torch.clamp(1.0 / (self.count.to(torch.float64) + 1.0), min=self.beta)
        step = torch.where(seen, step, torch.zeros_like(step))
        self.mu.mul_(1 - step).add_(step * mean)
        self.nu.mul_(1 - step).add_(step * second)
        self.count.add_(seen.to(torch.int64))

    @torch.no_grad()
    def preserve(self, layer: nn.Linear, old_mu: torch.Tensor, old_sigma: torch.Tensor) -> None:
        """Rescale `layer` (output k = task k) so that `denormalize(layer(h))` is unchanged by the last update."""
        new_mu, new_sigma = self.mu, self.sigma
        ratio = (old_sigma / new_sigma).to(layer.weight.dtype)
        layer.weight.mul_(ratio[:, None])
        layer.bias.copy_(((old_sigma * layer.bias.to(torch.float64) + old_mu - new_mu) / new_sigma).to(layer.bias))

    def _at(self, task: torch.Tensor | None, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, sigma = self.mu.to(like.dtype), self.sigma.to(like.dtype)
        if task is None:
            return mu[0], sigma[0]
        return mu[task], sigma[task]
