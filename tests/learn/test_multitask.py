"""learn_step on mixed-task batches (the real two-task model): the same batch layout and statistics, each task's
PopArt statistics moved by its own steps only, masked actions never taken, and the exploration loss spread over
each task's own buttons."""

from __future__ import annotations

import math

import pytest
import torch

from beast.envs.tasks import MASKED_LOGIT
from beast.learn import STAT_KEYS, learn_step, losses
from beast.learn.optim import build_optimizer
from beast.model import build_model
from tests.learn.conftest import make_batch, small_config

SUITE = "basic,defend_the_center"
# Task 0 has actions 0-2 of five, task 1 all five.
AVAILABLE = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])


def two_task_setup(tasks: list[int], seed: int = 1):
    cfg = small_config(scenario=SUITE, batch_size=len(tasks))
    torch.manual_seed(0)
    model = build_model(cfg, AVAILABLE.shape[1], AVAILABLE)
    batch = make_batch(cfg, torch.Generator().manual_seed(seed), done_slots=(3,), num_actions=AVAILABLE.shape[1])
    batch["task"] = torch.tensor(tasks).expand(cfg.unroll_length + 1, -1).clone()
    # The behaviour policy acted on the masked logits: its actions are available in their task.
    mask = AVAILABLE[batch["task"]]
    batch["policy_logits"] = batch["policy_logits"].masked_fill(~mask, MASKED_LOGIT)
    batch["action"] = torch.where(mask.gather(-1, batch["action"][..., None])[..., 0], batch["action"], 0)
    return cfg, model, batch


def test_a_mixed_task_batch_takes_the_same_step_shape_and_reports_each_tasks_statistics() -> None:
    cfg, model, batch = two_task_setup([0, 1, 0])
    optimizer = build_optimizer(model.parameters(), cfg)
    state = model.initial_state(cfg.batch_size, "cpu")
    stats = learn_step(model, optimizer, batch, state, cfg, learner_version=10)
    assert set(STAT_KEYS) <= set(stats)
    assert {"popart_mu/0", "popart_mu/1", "popart_sigma/0", "popart_sigma/1"} <= set(stats)
    assert all(math.isfinite(v) for v in stats.values()), stats
    assert all(torch.isfinite(p).all() for p in model.parameters())
    outputs, _ = model(batch, state)
    assert outputs["policy_logits"].shape == (cfg.unroll_length + 1, cfg.batch_size, 5)
    probs = torch.softmax(outputs["policy_logits"], dim=-1)
    assert (probs[:, [0, 2]][..., 3:] == 0).all()  # task 0's rollouts never take actions 3 and 4
    assert (probs[:, 1] > 0).all()


def test_each_tasks_popart_statistics_move_with_its_own_returns_only() -> None:
    cfg, model, batch = two_task_setup([0, 0, 0])
    optimizer = build_optimizer(model.parameters(), cfg)
    popart = model.popart
    before = popart.mu.clone(), popart.nu.clone(), popart.count.clone()
    learn_step(model, optimizer, batch, model.initial_state(3, "cpu"), cfg)
    assert popart.count.tolist() == [1, 0]
    assert popart.mu[0] != before[0][0] and popart.mu[1] == before[0][1] and popart.nu[1] == before[1][1]

    # Task 1's rewards a hundred times task 0's: only task 1's sigma grows with them.
    cfg, model, batch = two_task_setup([0, 1, 1], seed=2)
    batch["reward"][:, 1:] *= 100.0
    optimizer = build_optimizer(model.parameters(), cfg)
    learn_step(model, optimizer, batch, model.initial_state(3, "cpu"), cfg)
    sigma = model.popart.sigma
    assert sigma[1] > 20 * sigma[0], sigma


def test_each_task_reads_its_own_value_head_and_statistics() -> None:
    _, model, batch = two_task_setup([0, 1, 1])
    with torch.no_grad():
        model.popart.mu.copy_(torch.tensor([0.0, 1000.0], dtype=torch.float64))
        outputs, _ = model(batch, model.initial_state(3, "cpu"))
    assert (outputs["baseline"][:, 1:] > 900).all() and (outputs["baseline"][:, 0].abs() < 100).all()


@pytest.mark.parametrize("loss", [losses.symmetric_kl_to_uniform_loss, losses.entropy_loss])
def test_the_exploration_loss_of_a_masked_task_is_that_of_its_own_buttons(loss) -> None:
    logits = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(3), requires_grad=True)
    available = AVAILABLE[0].expand(4, 3, 5)
    masked = logits.masked_fill(~available, MASKED_LOGIT)
    full = loss(masked, available)
    own = loss(logits[..., :3])  # the same policy over its three buttons alone
    assert full.item() == pytest.approx(own.item(), rel=1e-5)
    (grad,) = torch.autograd.grad(full, logits)
    assert (grad[..., 3:] == 0).all()
