"""Shared pieces of the model tests, as fixtures: a small config, env-like inputs, a random non-zero state.

Fixtures rather than imports: several test folders have a conftest.py and none is a package.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from beast.config import Config

NUM_ACTIONS = 5


def small_config(**overrides: object) -> Config:
    """Tiny widths so float64 tests stay fast; chunk 4 so short sequences span several chunks."""
    values: dict[str, object] = dict(
        d_model=16,
        d_state=4,
        d_conv=4,
        expand=2,
        headdim=8,
        mamba_chunk_size=4,
        action_embed_dim=8,
        head_hidden=16,
        mamba_backend="torch",
    )
    values.update(overrides)
    cfg = Config(**values)  # type: ignore[arg-type]
    cfg.validate()
    return cfg


def env_inputs(
    steps: int, batch: int, generator: torch.Generator, done: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Random observations [T, B, ...] with the env server's dtypes and ranges."""
    g, T, B = generator, steps, batch
    return {
        "rgb": torch.randint(0, 256, (T, B, 3, 64, 64), generator=g, dtype=torch.uint8),
        "depth": torch.randint(0, 256, (T, B, 1, 64, 64), generator=g, dtype=torch.uint8),
        "enemy": (torch.rand(T, B, 1, 64, 64, generator=g) < 0.1).to(torch.uint8),
        "audio": torch.randint(-32768, 32768, (T, B, 2, 1024), generator=g, dtype=torch.int16),
        "last_action": torch.randint(0, NUM_ACTIONS, (T, B), generator=g),
        "reward": torch.randn(T, B, generator=g) * 3,
        "done": torch.zeros(T, B, dtype=torch.bool) if done is None else done,
    }


def random_state(state: tuple[torch.Tensor, ...], generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """A non-zero state shaped like `state` (so tests see whether the initial state is used, or dropped)."""
    return tuple(torch.randn(s.shape, generator=generator, dtype=s.dtype) * 0.5 for s in state)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def make_config() -> Callable[..., Config]:
    return small_config


@pytest.fixture
def make_inputs() -> Callable[..., dict[str, torch.Tensor]]:
    return env_inputs


@pytest.fixture
def make_state() -> Callable[..., tuple[torch.Tensor, ...]]:
    return random_state


@pytest.fixture
def num_actions() -> int:
    return NUM_ACTIONS
