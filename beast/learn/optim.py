"""The optimiser and its learning-rate schedule, built from the config.

The paper trains with RMSProp (lr 4.8e-4 for the single-task agents, epsilon 0.01, decay 0.99, no momentum) and
decays the learning rate linearly to zero over the run; Adam is offered as the common alternative. Note that
torch's RMSProp adds epsilon *outside* the square root (TensorFlow adds it inside), as in TorchBeast; with
epsilon 0.01 this damps steps on parameters whose squared-gradient average is small.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LRScheduler

from beast.config import Config
from beast.envs.tasks import task_configs


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: Config) -> torch.optim.Optimizer:
    """RMSProp or Adam over `params`, with every hyper-parameter taken from the config."""
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            params,
            lr=cfg.learning_rate,
            alpha=cfg.rmsprop_alpha,
            eps=cfg.rmsprop_eps,
            momentum=cfg.rmsprop_momentum,
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)
    raise ValueError(f"optimizer {cfg.optimizer!r} is not one of rmsprop, adam.")


def frames_per_learner_step(cfg: Config, ranks: int = 1) -> int:
    """Frames one learner step consumes: T x B agent steps, each `frame_skip` engine tics, on each of `ranks`
    synchronous learners. In a multi-task run, whose tasks may step with different frame skips, the expected
    frames: each task's share of the rollouts is its share of the envs, an equal one (the learner counts each
    step's frames exactly; only the learning rate's schedule uses this)."""
    skips = [task.frame_skip for task in task_configs(cfg)]
    return round(cfg.unroll_length * cfg.batch_size * ranks * sum(skips) / len(skips))


class LinearDecay(LRScheduler):
    """lr = base_lr * ramp * max(0, 1 - frames / total_frames), where frames = steps taken x frames per step and
    ramp = min(1, frames after this step / warmup_frames) (1 without a warm-up).

    Why a warm-up: Adam's first steps move every weight by about the full rate whatever its gradient's size, and
    in a new agent those gradients are mostly the critic's early errors. On basic at lr 1e-3 its first 60 steps
    left up to 66% of the vision's last conv channels dead and its features almost constant across frames (a
    blind agent); one run of eight never recovered and stayed at random's return (docs/training.md, "Adam's
    first steps, and a blind agent").

    Call `step()` once after each optimiser step. A torch LR scheduler so that `state_dict()` (step count,
    base rates, frame budget, warm-up) goes into the checkpoint and a resumed run continues the same schedule.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_frames: int,
        frames_per_step: int,
        warmup_frames: int = 0,
        last_epoch: int = -1,
    ) -> None:
        if total_frames <= 0 or frames_per_step <= 0 or warmup_frames < 0:
            raise ValueError(
                f"LinearDecay needs positive total_frames and frames_per_step and warmup_frames >= 0, got "
                f"{total_frames}, {frames_per_step} and {warmup_frames}."
            )
        self.total_frames = total_frames
        self.frames_per_step = frames_per_step
        self.warmup_frames = warmup_frames
        super().__init__(optimizer, last_epoch)

    def factor(self, steps: int) -> float:
        """The multiplier of the base rate for the step after `steps` learner steps."""
        frames = steps * self.frames_per_step
        ramp = 1.0 if self.warmup_frames == 0 else min(1.0, (frames + self.frames_per_step) / self.warmup_frames)
        return ramp * max(0.0, 1.0 - frames / self.total_frames)

    def get_lr(self) -> list[float | torch.Tensor]:
        return [float(base_lr) * self.factor(self.last_epoch) for base_lr in self.base_lrs]


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Config, frames_per_step: int | None = None) -> LinearDecay:
    """Linear decay to zero over `cfg.total_frames`, after `cfg.lr_warmup_frames` of linear warm-up.
    `frames_per_step` defaults to T x B x frame_skip; pass world_size times that when several learners step in
    sync on disjoint batches."""
    per_step = frames_per_learner_step(cfg) if frames_per_step is None else frames_per_step
    return LinearDecay(
        optimizer, total_frames=cfg.total_frames, frames_per_step=per_step, warmup_frames=cfg.lr_warmup_frames
    )
