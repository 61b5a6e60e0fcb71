"""Shared pieces of the learner tests: a small config, synthetic rollouts in the runtime's layout, and the agents.

`TinyAgent` is a stand-in with exactly the model interface the learner codes against (`beast.model`):
`initial_state`, `forward(inputs, state) -> (outputs, new_state)` over `[T, B]` with resets at `done`, and
`parameter_groups()`. The learner tests run on the real model (`agent_factory`, small config); the stand-in is
kept for what the real model cannot show: a critic that reads the policy head (`critic_reads_policy=True`), so
that the critic's loss reaches actor-only parameters and the warm-up must drop those gradients itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from beast.config import Config
from beast.model import build_model
from beast.model.popart import PopArt

NUM_ACTIONS = 5


def small_config(**overrides: object) -> Config:
    """A config small enough for CPU tests: T=6, B=3 and a narrow model; float32 (the tests compare the learner's
    statistics with float32 forward passes; the bf16 learner has tests of its own)."""
    values: dict[str, object] = dict(
        unroll_length=6,
        batch_size=3,
        d_model=32,
        d_state=16,
        headdim=16,
        expand=2,
        head_hidden=32,
        action_embed_dim=16,
        mamba_chunk_size=8,
        mamba_backend="torch",
        device="cpu",
        precision="fp32",
        total_frames=100_000,
    )
    values.update(overrides)
    return dataclasses.replace(Config(), **values)  # type: ignore[arg-type]


class TinyAgent(nn.Module):
    """Stand-in for `beast.model` with the same interface: pooled pixels and audio, a last-action embedding, a
    tanh recurrent cell that zeroes its state where `done`, and policy and critic heads (the critic optionally
    also reading the policy head's logits)."""

    def __init__(self, cfg: Config, num_actions: int, hidden: int = 16, critic_reads_policy: bool = False) -> None:
        super().__init__()
        self.critic_reads_policy = critic_reads_policy
        self.logit_lower_bound = cfg.logit_lower_bound
        self.hidden = hidden
        self.vision = nn.Linear(5 * 8 * 8, hidden)
        self.audio = nn.Linear(2 * 16, hidden)
        self.action = nn.Embedding(num_actions, hidden)
        self.core = nn.Linear(4 * hidden, hidden)
        self.policy_head = nn.Linear(hidden, num_actions)
        self.critic_head = nn.Linear(hidden, 1)
        self.popart = PopArt(beta=cfg.popart_beta)

    @property
    def value_layer(self) -> nn.Linear:
        return self.critic_head

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
        return (torch.zeros(batch_size, self.hidden, device=device),)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            name: list(getattr(self, name).parameters())
            for name in ("vision", "audio", "action", "core", "policy_head", "critic_head")
        }

    def forward(
        self, inputs: dict[str, torch.Tensor], state: tuple[torch.Tensor, ...]
    ) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
        T, B = inputs["done"].shape
        pixels = torch.cat([inputs["rgb"], inputs["depth"], inputs["enemy"]], dim=2).flatten(0, 1).float() / 255.0
        vision = torch.relu(self.vision(F.adaptive_avg_pool2d(pixels, 8).flatten(1))).view(T, B, -1)
        sound = F.adaptive_avg_pool1d(inputs["audio"].flatten(0, 1).float() / 32768.0, 16).flatten(1)
        audio = torch.relu(self.audio(sound)).view(T, B, -1)
        action = self.action(inputs["last_action"])
        (h,) = state
        features = []
        for t in range(T):
            h = h * (~inputs["done"][t]).unsqueeze(-1).float()
            h = torch.tanh(self.core(torch.cat([vision[t], audio[t], action[t], h], dim=-1)))
            features.append(h)
        core = torch.stack(features)
        logits = self.policy_head(core)
        if self.logit_lower_bound < 0:
            logits = torch.clamp(logits, min=self.logit_lower_bound)
        baseline = self.critic_head(core).squeeze(-1)
        if self.critic_reads_policy:
            baseline = baseline + 0.1 * logits.sum(-1)
        baseline = self.popart.denormalize(baseline)
        sampled = torch.multinomial(F.softmax(logits.detach().flatten(0, 1), dim=-1), 1).view(T, B)
        return {"policy_logits": logits, "baseline": baseline, "action": sampled}, (h,)


@pytest.fixture
def agent_factory() -> Callable[[Config], nn.Module]:
    """Builds the real agent (`beast.model.build_model`) from a config."""
    return lambda cfg: build_model(cfg, NUM_ACTIONS)


def make_batch(
    cfg: Config,
    generator: torch.Generator,
    done_slots: tuple[int, ...] = (),
    truncated_slots: tuple[int, ...] = (),
    num_actions: int = NUM_ACTIONS,
    max_lag: int = 3,
    learner_version: int = 10,
) -> dict[str, torch.Tensor]:
    """A synthetic `[T+1, B]` rollout in the layout of `learn_step`'s docstring.

    Observations, rewards and behaviour logits are random; actions are drawn from the behaviour logits (so mu is
    the policy that acted); `done` is set at `done_slots` and `truncated_slots` (time-outs) in every column;
    `last_action` follows the actions; the enemy mask is 0/1 as the server sends it; versions trail
    `learner_version` by 0..max_lag.
    """
    T1, B = cfg.unroll_length + 1, cfg.batch_size

    def uint8(*shape: int) -> torch.Tensor:
        return torch.randint(0, 256, (T1, B, *shape), generator=generator, dtype=torch.uint8)

    logits = 1.5 * torch.randn(T1, B, num_actions, generator=generator)
    actions = torch.multinomial(F.softmax(logits.flatten(0, 1), dim=-1), 1, generator=generator).view(T1, B)
    done = torch.zeros(T1, B, dtype=torch.bool)
    truncated = torch.zeros(T1, B, dtype=torch.bool)
    done[list(done_slots) + list(truncated_slots)] = True
    truncated[list(truncated_slots)] = True
    last_action = torch.zeros(T1, B, dtype=torch.int64)
    last_action[0] = torch.randint(0, num_actions, (B,), generator=generator)
    last_action[1:] = actions[:-1]
    return {
        "rgb": uint8(3, 64, 64),
        "depth": uint8(1, 64, 64),
        "enemy": (uint8(1, 64, 64) > 200).to(torch.uint8),
        "audio": torch.randint(-3000, 3000, (T1, B, 2, 1024), generator=generator, dtype=torch.int16),
        "reward": torch.randn(T1, B, generator=generator),
        "done": done,
        "truncated": truncated,
        "last_action": last_action,
        "action": actions,
        "policy_logits": logits,
        "policy_version": learner_version - torch.randint(0, max_lag + 1, (T1, B), generator=generator),
    }


@pytest.fixture
def make_config() -> Callable[..., Config]:
    """`make_config(**overrides)`: the small test config with some settings changed."""
    return small_config


@pytest.fixture
def make_rollout() -> Callable[..., dict[str, torch.Tensor]]:
    """`make_rollout(cfg, generator, done_slots=(), ...)`: a synthetic rollout, see `make_batch`."""
    return make_batch
