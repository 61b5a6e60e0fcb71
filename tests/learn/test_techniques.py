"""The seed's warm-up predicate and logit perturbation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from beast.config import Config
from beast.learn.techniques import in_critic_warmup, perturb_logits


def config_with(**overrides: object) -> Config:
    return dataclasses.replace(Config(), **overrides)  # type: ignore[arg-type]


def test_critic_warmup_covers_the_first_n_frames_and_is_off_by_default() -> None:
    assert not in_critic_warmup(0, config_with())
    cfg = config_with(critic_warmup_frames=1000)
    assert in_critic_warmup(0, cfg)
    assert in_critic_warmup(999, cfg)
    assert not in_critic_warmup(1000, cfg)


def test_perturb_logits_adds_reproducible_gaussian_noise_of_the_given_std() -> None:
    logits = torch.randn(200, 50, 7, generator=torch.Generator().manual_seed(0))
    a = perturb_logits(logits, 0.5, torch.Generator().manual_seed(1))
    b = perturb_logits(logits, 0.5, torch.Generator().manual_seed(1))
    c = perturb_logits(logits, 0.5, torch.Generator().manual_seed(2))
    assert a.shape == logits.shape
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    noise = a - logits
    assert abs(noise.mean().item()) < 0.01
    assert noise.std().item() == pytest.approx(0.5, rel=0.02)


def test_perturb_logits_with_zero_std_is_the_identity_and_negative_std_fails() -> None:
    logits = torch.randn(3, 4)
    assert torch.equal(perturb_logits(logits, 0.0), logits)
    with pytest.raises(ValueError, match="std"):
        perturb_logits(logits, -1.0)
