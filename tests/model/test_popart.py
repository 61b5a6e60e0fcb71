"""PopArt: statistics that follow the targets, outputs preserved exactly when they move, and a learner whose
targets are the same in reward units whatever the statistics (only the losses are measured in sigmas)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from beast.config import Config
from beast.learn import learn_step
from beast.model import build_model
from beast.model.popart import PopArt
from tests.learn.conftest import make_batch, small_config

NUM_ACTIONS = 5


def test_first_update_takes_the_batch_statistics_then_averages() -> None:
    popart = PopArt(num_tasks=1, beta=0.01)
    first = torch.tensor([1.0, 3.0, 5.0, 7.0])
    popart.update(first)
    assert popart.mu.item() == pytest.approx(4.0)
    assert popart.sigma.item() == pytest.approx(first.std(unbiased=False).item())
    popart.update(torch.tensor([14.0, 14.0]))
    # Second update: step max(beta, 1/2) = 1/2, the running average of the two batches' means.
    assert popart.mu.item() == pytest.approx(9.0)


def test_each_task_moves_only_with_its_own_targets() -> None:
    popart = PopArt(num_tasks=3, beta=0.5)
    popart.update(torch.tensor([10.0, 20.0, -4.0]), task=torch.tensor([0, 0, 2]))
    torch.testing.assert_close(popart.mu, torch.tensor([15.0, 0.0, -4.0], dtype=torch.float64))
    assert popart.count.tolist() == [1, 0, 1]


def test_a_statistics_update_leaves_the_models_values_unchanged() -> None:
    cfg = small_config()
    torch.manual_seed(0)
    model = build_model(cfg, NUM_ACTIONS)
    batch = make_batch(cfg, torch.Generator().manual_seed(1), done_slots=(2,))
    state = model.initial_state(cfg.batch_size, "cpu")
    with torch.no_grad():
        before = model(batch, state)[0]["baseline"]
        old_mu, old_sigma = model.popart.mu.clone(), model.popart.sigma.clone()
        model.popart.update(torch.randn(64, dtype=torch.float64) * 300 + 1000)  # far from the start (0, 1)
        moved = model(batch, state)[0]["baseline"]
        model.popart.preserve(model.value_layer, old_mu, old_sigma)
        after = model(batch, state)[0]["baseline"]
    assert model.popart.sigma.item() > 100  # the statistics really moved...
    assert (moved - before).abs().max() > 1  # ...which, unpreserved, shifts every value...
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-3)  # ...and preserved, none.


def test_learner_targets_are_statistics_free_and_losses_are_in_sigmas() -> None:
    cfg = dataclasses.replace(small_config(), popart=False)  # statistics held still during the measured steps
    torch.manual_seed(0)
    plain = build_model(cfg, NUM_ACTIONS)
    scaled = copy.deepcopy(plain)
    with torch.no_grad():
        old_mu, old_sigma = scaled.popart.mu.clone(), scaled.popart.sigma.clone()
        scaled.popart.update(torch.tensor([-20.0, 5.0, 40.0], dtype=torch.float64))
        scaled.popart.preserve(scaled.value_layer, old_mu, old_sigma)
    sigma = scaled.popart.sigma.item()
    batch = make_batch(cfg, torch.Generator().manual_seed(4), done_slots=(3,))
    batch["reward"] *= 10.0
    state = plain.initial_state(cfg.batch_size, "cpu")
    frozen = [torch.optim.SGD(m.parameters(), lr=0.0) for m in (plain, scaled)]
    a = learn_step(plain, frozen[0], batch, state, cfg)
    b = learn_step(scaled, frozen[1], batch, state, cfg)
    for key in ("vs_mean", "vs_std", "values_mean", "pg_advantages_mean", "explained_variance"):
        assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-3), key
    assert b["pg_loss"] == pytest.approx(a["pg_loss"] / sigma, rel=1e-3)
    assert b["baseline_loss"] == pytest.approx(a["baseline_loss"] / sigma**2, rel=1e-3)
    assert (b["popart_mu"], b["popart_sigma"]) == (pytest.approx(25.0 / 3), pytest.approx(sigma))


def test_popart_on_by_default_moves_the_statistics_during_learning() -> None:
    assert Config().popart
    cfg = small_config()
    model = build_model(cfg, NUM_ACTIONS)
    batch = make_batch(cfg, torch.Generator().manual_seed(5))
    batch["reward"] += 50.0
    stats = learn_step(
        model, torch.optim.SGD(model.parameters(), lr=0.0), batch, model.initial_state(cfg.batch_size, "cpu"), cfg
    )
    assert stats["popart_mu"] > 40.0  # the first update takes the batch's own mean target
