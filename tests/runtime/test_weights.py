"""The acting forward compiled on the CPU: the eager model's outputs at every batch size the batcher can give it
(one env, a few, and past the 16 from which torch compiles a second graph), and the weights of each publish; in a
multi-task model, each env's task picks its value head, PopArt statistics and mask of buttons as eagerly; in the
learner's precision (bf16 autocast) as the eager model computes under it."""

from __future__ import annotations

import dataclasses

import torch

from beast.bench.model import NUM_ACTIONS, fake_inputs
from beast.config import Config
from beast.learn.precision import autocast_dtype, autocast_to
from beast.model import build_model
from beast.runtime.weights import CompiledActing, ModelPolicy, PolicyWeights

CPU = torch.device("cpu")


def acting_batch(
    eager: torch.nn.Module, n: int, num_tasks: int = 1
) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
    """Random T=1 inputs of `n` envs (each env's task in a multi-task model) and a random state."""
    inputs = fake_inputs(1, n, CPU)
    if num_tasks > 1:
        inputs["task"] = torch.arange(n).remainder(num_tasks)[None]
    return inputs, tuple(torch.randn_like(s) for s in eager.initial_state(n, CPU))  # type: ignore[operator]


def compare(
    policy: ModelPolicy,
    eager: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    state: tuple[torch.Tensor, ...],
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """The policy's forward against `eager` under autocast to `dtype` (None: float32) on the same inputs, within
    that dtype's rounding; returns the policy's outputs."""
    with torch.no_grad():
        with autocast_to(dtype, "cpu"):
            want, want_state = eager(inputs, state)
        got, got_state = policy.forward(inputs, state)

    def close(g: torch.Tensor, w: torch.Tensor) -> None:
        if dtype is None:
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
        else:  # bf16 keeps 8 bits, and the compiled graph and eager round at different points, layer after layer:
            # 4 ulps of the largest value (2.1 seen on one batch)
            torch.testing.assert_close(g, w, atol=2**-5 * float(w.abs().max()), rtol=0.0)

    assert got.keys() == want.keys()
    for key in want:
        if key != "action":  # an argmax of logits equal to 1e-5 may break a near-tie either way
            close(got[key], want[key])
    for g, w in zip(got_state, want_state, strict=True):
        assert g.dtype == w.dtype == torch.float32
        close(g, w)
    return got


def test_the_compiled_forward_is_the_eager_one_at_every_size_and_follows_each_publish(small_cfg: Config) -> None:
    cfg = dataclasses.replace(small_cfg, compile_acting=True, precision="fp32")
    torch.manual_seed(0)
    learner = build_model(cfg, NUM_ACTIONS)
    weights = PolicyWeights(build_model(cfg, NUM_ACTIONS))
    weights.publish(learner, 0)
    policy = ModelPolicy(weights, cfg, frames_seen=lambda: 0)
    assert policy.compiled
    eager = build_model(cfg, NUM_ACTIONS).eval()
    eager.load_state_dict(learner.state_dict())
    for n in (1, 3, 17):
        compare(policy, eager, *acting_batch(eager, n))
    # New weights in place: the compiled graph reads them, as it must after every learner step.
    with torch.no_grad():
        for p in learner.parameters():
            p.add_(0.1 * torch.randn_like(p))
    weights.publish(learner, 1)
    eager.load_state_dict(learner.state_dict())
    for n in (2, 17):
        compare(policy, eager, *acting_batch(eager, n))


def test_without_the_flag_the_policy_acts_with_the_model_itself(small_cfg: Config) -> None:
    """Eager acting is float32 whatever the learner's precision: the model itself, no autocast around it."""
    cfg = dataclasses.replace(small_cfg, compile_acting=False, precision="bf16")
    weights = PolicyWeights(build_model(cfg, NUM_ACTIONS))
    policy = ModelPolicy(weights, cfg, frames_seen=lambda: 0)
    assert not policy.compiled and policy.forward is weights.model


def test_the_compiled_forward_computes_in_the_learners_precision(small_cfg: Config) -> None:
    """With --precision bf16 the compiled forward is the eager one under the learner's bf16 autocast (the trunk in
    bf16, the heads and state float32), not the float32 one; auto resolves as the learner's does."""
    cfg = dataclasses.replace(small_cfg, compile_acting=True, precision="bf16")
    torch.manual_seed(0)
    weights = PolicyWeights(build_model(cfg, NUM_ACTIONS))
    policy = ModelPolicy(weights, cfg, frames_seen=lambda: 0)
    assert isinstance(policy.forward, CompiledActing) and policy.forward.dtype is torch.bfloat16
    eager = build_model(cfg, NUM_ACTIONS).eval()
    eager.load_state_dict(weights.model.state_dict())
    for n in (3, 17):
        torch.manual_seed(n)
        inputs, state = acting_batch(eager, n)
        got = compare(policy, eager, inputs, state, dtype=torch.bfloat16)
        with torch.no_grad():
            fp32, _ = eager(inputs, state)
        assert (got["baseline"] - fp32["baseline"]).abs().max() > 1e-6  # bf16 rounding, where fp32 agrees to 1e-8
    auto = ModelPolicy(weights, dataclasses.replace(cfg, precision="auto"), frames_seen=lambda: 0)
    assert isinstance(auto.forward, CompiledActing) and auto.forward.dtype == autocast_dtype("auto", CPU)


def test_the_compiled_multi_task_forward_masks_and_values_each_env_by_its_task(small_cfg: Config) -> None:
    cfg = dataclasses.replace(small_cfg, scenario="basic,rocket_basic", compile_acting=True, precision="fp32")
    available = torch.ones(2, NUM_ACTIONS, dtype=torch.bool)
    available[0, -2:] = False  # task 0 lacks two buttons, task 1 has all
    torch.manual_seed(0)
    learner = build_model(cfg, NUM_ACTIONS, available)
    with torch.no_grad():  # statistics far apart, so a value read through the other task's would differ
        learner.popart.mu.copy_(torch.tensor([-150.0, 40.0], dtype=torch.float64))
        learner.popart.nu.copy_(learner.popart.mu**2 + torch.tensor([900.0, 4.0], dtype=torch.float64))
    weights = PolicyWeights(build_model(cfg, NUM_ACTIONS, available))
    weights.publish(learner, 0)
    policy = ModelPolicy(weights, cfg, frames_seen=lambda: 0)
    eager = build_model(cfg, NUM_ACTIONS, available).eval()
    eager.load_state_dict(learner.state_dict())
    for n in (1, 3, 17):
        compare(policy, eager, *acting_batch(eager, n, num_tasks=2))
    # The statistics move at every learner step: the compiled graph reads them, as it reads the weights.
    with torch.no_grad():
        learner.popart.mu.add_(25.0)
    weights.publish(learner, 1)
    eager.load_state_dict(learner.state_dict())
    compare(policy, eager, *acting_batch(eager, 5, num_tasks=2))
