"""The seed write-up's remedies for a pessimistic critic (seed 000, "Training Techniques").

The failure they target: early in training the critic rates every action as bad, the policy gradient pushes all
action probabilities down, and the actor "dies" before the critic has learnt anything useful. Each remedy delays
that; none is on by default (the config's defaults reproduce plain IMPALA):

1. Critic warm-up (`critic_warmup_frames`): for the first N frames only the baseline loss is optimised; the
   policy-gradient and entropy losses are left out and the actor-only parameters (the policy head) are not
   stepped. The shared trunk still learns, from the critic's loss alone.
2. Random logit perturbation (`warmup_logit_noise`): during warm-up the *actors* add Gaussian noise to the logits
   before sampling, so the critic sees a broader spread of actions than the untrained policy would take.
3. Logit lower bound (`logit_lower_bound`): clamping logits from below keeps every action's probability away
   from zero, so a pessimistic critic cannot drive an action out of the policy entirely. The model applies it
   (its heads own the logits); the learner only reports how often it binds (`logits_at_lower_bound_frac`).
"""

from __future__ import annotations

import torch

from beast.config import Config


def in_critic_warmup(frames_seen: int, cfg: Config) -> bool:
    """True while the actor is frozen: fewer than `cfg.critic_warmup_frames` frames have been trained on."""
    return frames_seen < cfg.critic_warmup_frames


def perturb_logits(logits: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """logits + N(0, std^2) noise, for the batcher to sample from during critic warm-up.

    logits: `[..., A]`; returns the same shape. `generator` (on the logits' device) makes the noise reproducible.

    The runtime must record the *perturbed* logits as the behaviour policy mu in the rollout (`policy_logits`),
    because they are the distribution the action was actually drawn from; recording the clean logits would make
    the V-trace importance weights pi/mu wrong for every perturbed step.
    """
    if std < 0:
        raise ValueError(f"perturb_logits: std must be >= 0, got {std}.")
    if std == 0:
        return logits
    noise = torch.randn(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    return logits + std * noise
