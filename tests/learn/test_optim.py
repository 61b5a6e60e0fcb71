"""Optimiser construction from the config, and the learning rate's linear warm-up and decay."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.optim.lr_scheduler import LRScheduler

from beast.config import Config
from beast.learn.optim import build_optimizer, build_scheduler, frames_per_learner_step


def config_with(**overrides: object) -> Config:
    return dataclasses.replace(Config(), **overrides)  # type: ignore[arg-type]


def params() -> list[torch.nn.Parameter]:
    return list(torch.nn.Linear(3, 2).parameters())


def test_rmsprop_takes_the_papers_settings_from_the_config() -> None:
    cfg = config_with(
        optimizer="rmsprop", learning_rate=1e-3, rmsprop_alpha=0.9, rmsprop_eps=0.05, rmsprop_momentum=0.1
    )
    opt = build_optimizer(params(), cfg)
    assert isinstance(opt, torch.optim.RMSprop)
    group = opt.param_groups[0]
    assert (group["lr"], group["alpha"], group["eps"], group["momentum"]) == (1e-3, 0.9, 0.05, 0.1)


def test_adam_takes_its_settings_from_the_config() -> None:
    cfg = config_with(optimizer="adam", learning_rate=2e-4, adam_beta1=0.8, adam_beta2=0.95, adam_eps=1e-6)
    opt = build_optimizer(params(), cfg)
    assert isinstance(opt, torch.optim.Adam)
    group = opt.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"]) == (2e-4, (0.8, 0.95), 1e-6)


def test_learning_rate_decays_linearly_to_zero_over_total_frames() -> None:
    per_step = frames_per_learner_step(config_with())
    cfg = config_with(total_frames=10 * per_step + 1)  # a little over 10 learner steps of T*B*frame_skip
    opt = build_optimizer(params(), cfg)
    sched = build_scheduler(opt, cfg)
    assert isinstance(sched, LRScheduler)
    assert per_step == cfg.unroll_length * cfg.batch_size * cfg.frame_skip
    for k in range(14):
        expected = cfg.learning_rate * max(0.0, 1.0 - k * per_step / cfg.total_frames)
        assert opt.param_groups[0]["lr"] == pytest.approx(expected, abs=1e-15)
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == 0.0


def test_learning_rate_warms_up_linearly_then_decays() -> None:
    per_step = frames_per_learner_step(config_with())
    cfg = config_with(total_frames=20 * per_step, lr_warmup_frames=4 * per_step)
    opt = build_optimizer(params(), cfg)
    sched = build_scheduler(opt, cfg)
    rates = []
    for _ in range(20):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # Step k (0-based) takes (k + 1) / 4 of the rate until the ramp reaches 1, then the decay's k / 20.
    ramp = [cfg.learning_rate * (k + 1) / 4 * (1 - k / 20) for k in range(4)]
    decay = [cfg.learning_rate * (1 - k / 20) for k in range(4, 20)]
    assert rates == pytest.approx(ramp + decay, abs=1e-15)
    assert 0 < rates[0] < rates[1] < rates[2] < rates[3]
    assert opt.param_groups[0]["lr"] == 0.0


def test_scheduler_state_round_trips_through_a_checkpoint() -> None:
    cfg = config_with(total_frames=100_000, lr_warmup_frames=20_000)
    opt = build_optimizer(params(), cfg)
    sched = build_scheduler(opt, cfg)
    for _ in range(3):
        opt.step()
        sched.step()
    state = sched.state_dict()

    opt2 = build_optimizer(params(), cfg)
    sched2 = build_scheduler(opt2, cfg)
    sched2.load_state_dict(state)
    opt.step()
    sched.step()
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    assert opt2.param_groups[0]["lr"] < cfg.learning_rate
