"""The learning half of IMPALA: V-trace, the three losses, the optimiser, the seed's techniques, diagnostics and
one learner step. Pure functions of tensors and a model; the runtime feeds `learn_step` with rollouts."""

from beast.learn.learner import PER_LOSS_KEYS, STAT_KEYS, learn_step
from beast.learn.optim import LinearDecay, build_optimizer, build_scheduler
from beast.learn.techniques import in_critic_warmup, perturb_logits

__all__ = [
    "PER_LOSS_KEYS",
    "STAT_KEYS",
    "LinearDecay",
    "build_optimizer",
    "build_scheduler",
    "in_critic_warmup",
    "learn_step",
    "perturb_logits",
]
