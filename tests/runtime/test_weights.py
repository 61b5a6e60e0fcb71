"""The acting forward compiled on the CPU: the eager model's outputs at every batch size the batcher can give it
(one env, a few, and past the 16 from which torch compiles a second graph), and the weights of each publish."""

from __future__ import annotations

import dataclasses

import torch

from beast.bench.model import NUM_ACTIONS, fake_inputs
from beast.config import Config
from beast.model import build_model
from beast.runtime.weights import ModelPolicy, PolicyWeights

CPU = torch.device("cpu")


def compare(policy: ModelPolicy, eager: torch.nn.Module, n: int) -> None:
    inputs = fake_inputs(1, n, CPU)
    state = tuple(torch.randn_like(s) for s in eager.initial_state(n, CPU))  # type: ignore[operator]
    with torch.no_grad():
        want, want_state = eager(inputs, state)
        got, got_state = policy.forward(inputs, state)
    for key in ("policy_logits", "baseline"):
        torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=1e-5)
    for g, w in zip(got_state, want_state, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


def test_the_compiled_forward_is_the_eager_one_at_every_size_and_follows_each_publish(small_cfg: Config) -> None:
    cfg = dataclasses.replace(small_cfg, compile_acting=True)
    torch.manual_seed(0)
    learner = build_model(cfg, NUM_ACTIONS)
    weights = PolicyWeights(build_model(cfg, NUM_ACTIONS))
    weights.publish(learner, 0)
    policy = ModelPolicy(weights, cfg, frames_seen=lambda: 0)
    assert policy.compiled
    eager = build_model(cfg, NUM_ACTIONS).eval()
    eager.load_state_dict(learner.state_dict())
    for n in (1, 3, 17):
        compare(policy, eager, n)
    # New weights in place: the compiled graph reads them, as it must after every learner step.
    with torch.no_grad():
        for p in learner.parameters():
            p.add_(0.1 * torch.randn_like(p))
    weights.publish(learner, 1)
    eager.load_state_dict(learner.state_dict())
    for n in (2, 17):
        compare(policy, eager, n)


def test_without_the_flag_the_policy_acts_with_the_model_itself(small_cfg: Config) -> None:
    cfg = dataclasses.replace(small_cfg, compile_acting=False)
    weights = PolicyWeights(build_model(cfg, NUM_ACTIONS))
    policy = ModelPolicy(weights, cfg, frames_seen=lambda: 0)
    assert not policy.compiled and policy.forward is weights.model
