"""V-trace against its definition (Espeholt et al. 2018, eq. 1), computed the slow way in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from beast.learn import vtrace


def naive_vtrace(
    log_rhos: np.ndarray,
    discounts: np.ndarray,
    rewards: np.ndarray,
    values: np.ndarray,
    bootstrap: np.ndarray,
    rho_bar: float | None,
    pg_rho_bar: float | None,
) -> tuple[np.ndarray, ...]:
    """v_s = V(x_s) + sum_{t>=s} (prod_{i=s}^{t-1} gamma_i c_i) rho_t (r_t + gamma_t V(x_{t+1}) - V(x_t)), summed
    term by term for every s (O(T^2)); pg advantage rho^pg_s (r_s + gamma_s v_{s+1} - V(x_s)) with v_T = V(x_T)."""
    T = len(discounts)
    rhos = np.exp(log_rhos)
    cs = np.minimum(rhos, 1.0)
    clipped = rhos if rho_bar is None else np.minimum(rhos, rho_bar)
    pg_clipped = rhos if pg_rho_bar is None else np.minimum(rhos, pg_rho_bar)
    next_values = np.concatenate([values[1:], bootstrap[None]], axis=0)
    vs = np.zeros_like(values)
    for s in range(T):
        total = values[s].copy()
        for t in range(s, T):
            weight = np.prod(discounts[s:t] * cs[s:t], axis=0)  # empty product = 1 for t == s
            total += weight * clipped[t] * (rewards[t] + discounts[t] * next_values[t] - values[t])
        vs[s] = total
    next_vs = np.concatenate([vs[1:], bootstrap[None]], axis=0)
    pg_advantages = pg_clipped * (rewards + discounts * next_vs - values)
    return vs, pg_advantages


def random_inputs(T: int, B: int, seed: int) -> dict[str, np.ndarray]:  # noqa: N803
    rng = np.random.default_rng(seed)
    # log rho spanning [-2.5, 2.5) so that some ratios fall under and some over each threshold.
    log_rhos = 5.0 * (np.arange(T * B, dtype=np.float64).reshape(T, B) / (T * B) - 0.5)
    log_rhos = rng.permuted(log_rhos.ravel()).reshape(T, B)
    # A different discount per column, with some episode ends (discount 0) inside the sequence.
    discounts = np.tile(np.linspace(0.8, 0.99, B), (T, 1))
    discounts[rng.random((T, B)) < 0.15] = 0.0
    return {
        "log_rhos": log_rhos,
        "discounts": discounts,
        "rewards": rng.normal(size=(T, B)),
        "values": rng.normal(size=(T, B)),
        "bootstrap_value": rng.normal(size=B),
    }


def as_torch(inputs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(value) for key, value in inputs.items()}


@pytest.mark.parametrize("batch_size", [1, 5])
@pytest.mark.parametrize(("rho_bar", "pg_rho_bar"), [(3.7, 2.2), (1.0, 1.0), (None, None)])
def test_from_importance_weights_matches_naive_ground_truth(
    batch_size: int, rho_bar: float | None, pg_rho_bar: float | None
) -> None:
    inputs = random_inputs(T=7, B=batch_size, seed=batch_size)
    expected_vs, expected_adv = naive_vtrace(*inputs.values(), rho_bar, pg_rho_bar)
    out = vtrace.from_importance_weights(
        **as_torch(inputs), clip_rho_threshold=rho_bar, clip_pg_rho_threshold=pg_rho_bar
    )
    np.testing.assert_allclose(out.vs.numpy(), expected_vs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out.pg_advantages.numpy(), expected_adv, rtol=1e-10, atol=1e-10)


def test_on_policy_equals_n_step_bootstrapped_return() -> None:
    T, B = 6, 4
    inputs = random_inputs(T, B, seed=3)
    inputs["log_rhos"] = np.zeros((T, B))
    r, d, v, boot = inputs["rewards"], inputs["discounts"], inputs["values"], inputs["bootstrap_value"]
    # G_s = r_s + g_s r_{s+1} + ... + (g_s ... g_{T-1}) V(x_T): the n-step return to the end of the fragment.
    returns = np.zeros((T, B))
    for s in range(T):
        total, scale = np.zeros(B), np.ones(B)
        for t in range(s, T):
            total += scale * r[t]
            scale = scale * d[t]
        returns[s] = total + scale * boot
    out = vtrace.from_importance_weights(**as_torch(inputs), clip_rho_threshold=1.0, clip_pg_rho_threshold=1.0)
    np.testing.assert_allclose(out.vs.numpy(), returns, rtol=1e-10, atol=1e-10)
    next_returns = np.concatenate([returns[1:], boot[None]])
    np.testing.assert_allclose(out.pg_advantages.numpy(), r + d * next_returns - v, rtol=1e-10, atol=1e-10)


def test_concatenated_episodes_equal_each_computed_alone() -> None:
    T, B, cut = 8, 3, 3
    inputs = random_inputs(T, B, seed=4)
    inputs["discounts"] = np.full((T, B), 0.95)
    inputs["discounts"][cut - 1] = 0.0  # the first episode ends after step cut-1
    joint = vtrace.from_importance_weights(**as_torch(inputs), clip_rho_threshold=3.7, clip_pg_rho_threshold=2.2)

    def part(lo: int, hi: int, bootstrap: np.ndarray) -> vtrace.VTraceReturns:
        piece = {key: value[lo:hi] for key, value in inputs.items() if key != "bootstrap_value"}
        return vtrace.from_importance_weights(
            **as_torch(piece),
            bootstrap_value=torch.from_numpy(bootstrap),
            clip_rho_threshold=3.7,
            clip_pg_rho_threshold=2.2,
        )

    # The first episode's own bootstrap is irrelevant (discount 0): any value must give the same result.
    first = part(0, cut, np.random.default_rng(0).normal(size=B) * 100)
    second = part(cut, T, inputs["bootstrap_value"])
    torch.testing.assert_close(joint.vs, torch.cat([first.vs, second.vs]))
    torch.testing.assert_close(joint.pg_advantages, torch.cat([first.pg_advantages, second.pg_advantages]))


def test_action_log_probs_are_log_softmax_at_the_chosen_action() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(4, 3, 6)) * 3
    actions = rng.integers(0, 6, size=(4, 3))
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    expected = np.take_along_axis(log_softmax, actions[..., None], axis=-1)[..., 0]
    got = vtrace.action_log_probs(torch.from_numpy(logits), torch.from_numpy(actions))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_from_logits_equals_from_importance_weights_on_the_derived_log_rhos() -> None:
    T, B, A = 5, 4, 7
    inputs = random_inputs(T, B, seed=6)
    gen = torch.Generator().manual_seed(6)
    behaviour = torch.randn(T, B, A, generator=gen, dtype=torch.float64)
    target = torch.randn(T, B, A, generator=gen, dtype=torch.float64, requires_grad=True)
    actions = torch.randint(0, A, (T, B), generator=gen)
    rest = {key: value for key, value in as_torch(inputs).items() if key != "log_rhos"}
    out = vtrace.from_logits(behaviour, target, actions, **rest, clip_rho_threshold=3.7, clip_pg_rho_threshold=2.2)

    log_pi = torch.log_softmax(target.detach(), -1).gather(-1, actions[..., None])[..., 0]
    log_mu = torch.log_softmax(behaviour, -1).gather(-1, actions[..., None])[..., 0]
    torch.testing.assert_close(out.log_rhos, log_pi - log_mu)
    torch.testing.assert_close(out.target_action_log_probs.detach(), log_pi)
    torch.testing.assert_close(out.behavior_action_log_probs, log_mu)
    reference = vtrace.from_importance_weights(
        log_pi - log_mu, **rest, clip_rho_threshold=3.7, clip_pg_rho_threshold=2.2
    )
    torch.testing.assert_close(out.vs, reference.vs)
    torch.testing.assert_close(out.pg_advantages, reference.pg_advantages)
    # Targets are constants; only log pi(a) keeps its gradient, for the policy-gradient loss.
    assert not out.vs.requires_grad and not out.pg_advantages.requires_grad and not out.log_rhos.requires_grad
    assert out.target_action_log_probs.requires_grad


def test_targets_carry_no_gradient_from_values() -> None:
    inputs = as_torch(random_inputs(4, 2, seed=7))
    values = inputs.pop("values").requires_grad_(True)
    out = vtrace.from_importance_weights(values=values, **inputs)
    assert not out.vs.requires_grad and not out.pg_advantages.requires_grad


@pytest.mark.parametrize("wrong", ["log_rhos", "discounts", "rewards", "values", "bootstrap_value"])
def test_rank_mismatch_raises(wrong: str) -> None:
    inputs = as_torch(random_inputs(4, 2, seed=8))
    inputs[wrong] = inputs[wrong].unsqueeze(-1)
    with pytest.raises(ValueError, match=wrong):
        vtrace.from_importance_weights(**inputs)


@pytest.mark.parametrize("wrong", ["behavior_policy_logits", "target_policy_logits", "actions"])
def test_from_logits_rank_mismatch_raises(wrong: str) -> None:
    T, B, A = 4, 2, 3
    args = {
        "behavior_policy_logits": torch.zeros(T, B, A),
        "target_policy_logits": torch.zeros(T, B, A),
        "actions": torch.zeros(T, B, dtype=torch.int64),
    }
    args[wrong] = args[wrong][0]
    rest = {key: value.float() for key, value in as_torch(random_inputs(T, B, seed=9)).items() if key != "log_rhos"}
    with pytest.raises(ValueError, match=wrong):
        vtrace.from_logits(**args, **rest)
