"""learn_step on the real model (small config): it learns, clips, freezes the actor in warm-up, honours resets,
and reports what the batch and config say."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from beast.config import Config
from beast.learn import PER_LOSS_KEYS, STAT_KEYS, learn_step, losses, vtrace
from beast.learn.learner import ACTOR_ONLY, compute_vtrace, split_rollout
from beast.learn.optim import build_optimizer, build_scheduler
from tests.learn.conftest import NUM_ACTIONS, TinyAgent

AgentFactory = Callable[[Config], nn.Module]
Rollout = Callable[..., dict[str, torch.Tensor]]


def snapshot(model: nn.Module) -> dict[str, list[torch.Tensor]]:
    return {name: [p.detach().clone() for p in params] for name, params in model.parameter_groups().items()}


def changed(before: list[torch.Tensor], after: list[nn.Parameter]) -> bool:
    return any(not torch.equal(b, a.detach()) for b, a in zip(before, after, strict=True))


def setup(
    agent_factory: AgentFactory,
    make_config: Callable[..., Config],
    make_rollout: Rollout,
    done_slots: tuple[int, ...] = (3,),
    **overrides: object,
):
    cfg = make_config(**overrides)
    torch.manual_seed(0)
    model = agent_factory(cfg)
    optimizer = build_optimizer(model.parameters(), cfg)
    batch = make_rollout(cfg, torch.Generator().manual_seed(1), done_slots=done_slots)
    state = model.initial_state(cfg.batch_size, "cpu")
    return cfg, model, optimizer, batch, state


def test_stats_are_finite_and_complete(agent_factory, make_config, make_rollout) -> None:
    cfg, model, optimizer, batch, state = setup(agent_factory, make_config, make_rollout, loss_grad_norm_interval=4)
    measured = learn_step(model, optimizer, batch, state, cfg, learner_version=8)
    assert set(measured) == set(STAT_KEYS) | set(PER_LOSS_KEYS)
    plain = learn_step(model, optimizer, batch, state, cfg, learner_version=9)
    assert set(plain) == set(STAT_KEYS)
    for stats in (measured, plain):
        bad = {key: value for key, value in stats.items() if not math.isfinite(value)}
        assert not bad, f"non-finite stats: {bad}"
    assert all(measured[key] > 0 for key in PER_LOSS_KEYS)


def test_a_bf16_step_moves_the_float32_weights_as_the_fp32_step_does(agent_factory, make_config, make_rollout):
    """bf16 autocast (`--precision`) computes the trunk's gradients in bf16; the weights, the optimiser's moments
    and the update stay float32, and the update is the fp32 step's up to rounding."""
    deltas = {}
    for precision in ("fp32", "bf16"):
        cfg, model, optimizer, batch, state = setup(agent_factory, make_config, make_rollout, precision=precision)
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        stats = learn_step(model, optimizer, batch, state, cfg, learner_version=1)
        assert all(math.isfinite(value) for value in stats.values())
        assert all(p.dtype == torch.float32 for p in model.parameters())
        deltas[precision] = torch.cat([p.detach().flatten() for p in model.parameters()]) - before
    assert not torch.equal(deltas["bf16"], deltas["fp32"])  # it did run in bf16
    assert torch.nn.functional.cosine_similarity(deltas["bf16"], deltas["fp32"], dim=0) > 0.9


def test_stats_report_what_the_batch_and_the_model_say(agent_factory, make_config, make_rollout) -> None:
    cfg, model, optimizer, batch, _ = setup(agent_factory, make_config, make_rollout, done_slots=(2, 5))
    state = random_state(model, cfg.batch_size)  # the rollout's stored state must be the one the learner uses
    before = copy.deepcopy(model)
    scheduler = build_scheduler(optimizer, cfg)
    stats = learn_step(model, optimizer, batch, state, cfg, scheduler=scheduler, learner_version=10)

    T = cfg.unroll_length
    lag = 10 - batch["policy_version"][:T].double()
    assert stats["policy_lag_mean"] == pytest.approx(lag.mean().item(), rel=1e-6)
    assert stats["policy_lag_max"] == lag.max().item()
    actions = batch["action"][:T, :, None]
    log_mu = torch.log_softmax(batch["policy_logits"][:T], -1).gather(-1, actions)
    assert stats["log_mu_mean"] == pytest.approx(log_mu.mean().item(), rel=1e-5)
    with torch.no_grad():
        outputs, _ = before(batch, state)
    log_pi = torch.log_softmax(outputs["policy_logits"][:T], -1).gather(-1, actions)
    assert stats["log_pi_mean"] == pytest.approx(log_pi.mean().item(), rel=1e-4)
    assert stats["values_mean"] == pytest.approx(outputs["baseline"][:T].mean().item(), rel=1e-4, abs=1e-6)
    assert stats["reward_mean"] == pytest.approx(batch["reward"][1:].mean().item(), rel=1e-5)
    assert stats["done_frac"] == pytest.approx(2 / T)
    assert stats["learning_rate"] == pytest.approx(cfg.learning_rate)
    assert optimizer.param_groups[0]["lr"] < cfg.learning_rate  # the scheduler was stepped
    assert stats["critic_warmup"] == 0.0
    assert stats["total_loss"] == pytest.approx(
        stats["pg_loss"] + stats["baseline_loss"] + stats["entropy_loss"], rel=1e-5, abs=1e-5
    )
    # The blocks partition the parameters, so their norms make up the global norm.
    blocks = sum(stats[f"grad_norm/{name}"] ** 2 for name in model.parameter_groups())
    assert stats["grad_norm/total"] == pytest.approx(math.sqrt(blocks), rel=1e-4)


def surrogate(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    state: tuple[torch.Tensor, ...],
    cfg: Config,
    targets: vtrace.VTraceFromLogitsReturns | None = None,
) -> tuple[float, vtrace.VTraceFromLogitsReturns]:
    """The loss learn_step descends, with the V-trace targets held at `targets` (or computed now)."""
    with torch.no_grad():
        outputs, _ = model(batch, state)
        steps = split_rollout(batch, outputs, cfg)
        fixed = compute_vtrace(steps, cfg) if targets is None else targets
        log_pi = vtrace.action_log_probs(steps["target_logits"], steps["actions"])
        loss = (
            losses.policy_gradient_loss(log_pi, fixed.pg_advantages)
            + cfg.baseline_cost * losses.baseline_loss(fixed.vs, steps["values"])
            + cfg.entropy_cost * losses.EXPLORATION_LOSSES[cfg.exploration_loss](steps["target_logits"])
        )
    return loss.item(), fixed


def test_repeated_steps_lower_the_loss_and_change_every_block(agent_factory, make_config, make_rollout) -> None:
    # Without PopArt, so the objective of each step is the one written out in `surrogate` (with PopArt it is the
    # same in normalised units: test_popart_* below).
    cfg, model, optimizer, batch, state = setup(
        agent_factory, make_config, make_rollout, optimizer="adam", learning_rate=1e-4, popart=False
    )
    start = snapshot(model)
    baseline_losses = []
    for version in range(8):
        before, targets = surrogate(model, batch, state, cfg)
        stats = learn_step(model, optimizer, batch, state, cfg, learner_version=version)
        assert stats["total_loss"] == pytest.approx(before, rel=1e-4, abs=1e-5)
        # Each step descends its own objective: with the step's V-trace targets held fixed, the loss went down.
        after, _ = surrogate(model, batch, state, cfg, targets)
        assert after < before, (version, before, after)
        baseline_losses.append(stats["baseline_loss"])
    # Over repeated steps the critic fits the (moving) V-trace targets of random rewards, steadily.
    assert all(b < a for a, b in itertools.pairwise(baseline_losses)), baseline_losses
    assert baseline_losses[-1] < 0.95 * baseline_losses[0], baseline_losses
    for name, params in model.parameter_groups().items():
        assert changed(start[name], params), f"{name} did not change"


@pytest.mark.parametrize("max_norm", [0.05, 0.0])
def test_gradient_is_clipped_to_the_configured_global_norm(
    agent_factory, make_config, make_rollout, max_norm: float
) -> None:
    cfg, model, optimizer, batch, state = setup(agent_factory, make_config, make_rollout, grad_norm_clipping=max_norm)
    stats = learn_step(model, optimizer, batch, state, cfg)
    # The gradients are left in .grad after the step: they are the clipped ones.
    after = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).norm().item()
    if max_norm > 0:
        assert stats["grad_norm/total"] > max_norm
        assert after == pytest.approx(max_norm, rel=1e-4)
        assert stats["grad_clip_scale"] == pytest.approx(max_norm / stats["grad_norm/total"], rel=1e-4)
    else:
        assert after == pytest.approx(stats["grad_norm/total"], rel=1e-4)
        assert stats["grad_clip_scale"] == 1.0


def assert_warmup_freezes_the_actor(
    model: nn.Module, cfg: Config, batch: dict[str, torch.Tensor], state: tuple[torch.Tensor, ...]
) -> None:
    optimizer = build_optimizer(model.parameters(), cfg)
    done_warming = cfg.critic_warmup_frames
    # One ordinary step first, so the optimiser holds momentum / moment estimates for the actor's parameters:
    # a zero gradient would still move them; only skipping them keeps them fixed.
    learn_step(model, optimizer, batch, state, cfg, frames_seen=done_warming)
    before = snapshot(model)
    stats = learn_step(model, optimizer, batch, state, cfg, frames_seen=done_warming - 1)
    assert stats["critic_warmup"] == 1.0
    assert stats["total_loss"] == pytest.approx(stats["baseline_loss"], rel=1e-6)
    groups = model.parameter_groups()
    for name in ACTOR_ONLY:
        assert not changed(before[name], groups[name]), f"{name} changed during warm-up"
    for name in ("critic_head", "core", "vision"):
        assert changed(before[name], groups[name]), f"{name} did not learn during warm-up"
    stats = learn_step(model, optimizer, batch, state, cfg, frames_seen=done_warming)
    assert stats["critic_warmup"] == 0.0
    assert changed(before["policy_head"], groups["policy_head"])


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_critic_warmup_leaves_actor_parameters_unchanged(
    agent_factory, make_config, make_rollout, optimizer: str
) -> None:
    cfg, model, _, batch, state = setup(
        agent_factory, make_config, make_rollout, optimizer=optimizer, rmsprop_momentum=0.9, critic_warmup_frames=1000
    )
    assert_warmup_freezes_the_actor(model, cfg, batch, state)


def test_critic_warmup_drops_actor_gradients_that_reach_it_through_the_critic(make_config, make_rollout) -> None:
    # The stand-in's critic reads the policy logits, so the baseline loss alone puts gradient on the policy head.
    cfg = make_config(optimizer="adam", critic_warmup_frames=1000)
    torch.manual_seed(0)
    model = TinyAgent(cfg, NUM_ACTIONS, critic_reads_policy=True)
    batch = make_rollout(cfg, torch.Generator().manual_seed(1), done_slots=(3,))
    assert_warmup_freezes_the_actor(model, cfg, batch, model.initial_state(cfg.batch_size))


def random_state(model: nn.Module, batch_size: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(7)
    return tuple(
        torch.randn(s.shape, generator=generator, dtype=s.dtype) for s in model.initial_state(batch_size, "cpu")
    )


def test_done_inside_the_fragment_uses_the_models_reset_semantics(agent_factory, make_config, make_rollout) -> None:
    k = 3  # slot k begins a new episode in every column
    cfg, model, _, batch, _ = setup(agent_factory, make_config, make_rollout, done_slots=(k,))
    state = random_state(model, cfg.batch_size)
    suffix = {key: value[k:] for key, value in batch.items()}
    with torch.no_grad():
        full_out, _ = model(batch, state)
        fresh_out, _ = model(suffix, model.initial_state(cfg.batch_size, "cpu"))
        stale_out, _ = model(batch, model.initial_state(cfg.batch_size, "cpu"))
    # Not vacuous: the initial state matters before the reset ...
    assert not torch.allclose(full_out["baseline"][:k], stale_out["baseline"][:k])
    # ... and nothing from before it survives: from slot k on, outputs and V-trace equal a fresh start there.
    for key in ("policy_logits", "baseline"):
        torch.testing.assert_close(full_out[key][k:], fresh_out[key], rtol=1e-5, atol=1e-5)
    full_vt = compute_vtrace(split_rollout(batch, full_out, cfg), cfg)
    suffix_cfg = make_config(unroll_length=cfg.unroll_length - k)
    fresh_vt = compute_vtrace(split_rollout(suffix, fresh_out, suffix_cfg), suffix_cfg)
    torch.testing.assert_close(full_vt.vs[k:], fresh_vt.vs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(full_vt.pg_advantages[k:], fresh_vt.pg_advantages, rtol=1e-5, atol=1e-5)


def test_losses_of_a_fragment_with_a_reset_are_the_sum_over_its_episodes(
    agent_factory, make_config, make_rollout
) -> None:
    k = 3
    cfg, model, _, batch, _ = setup(agent_factory, make_config, make_rollout, done_slots=(k,), popart=False)
    state = random_state(model, cfg.batch_size)
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)  # measure the losses without moving the weights
    prefix = {key: value[: k + 1] for key, value in batch.items()}  # slot k closes the first episode
    suffix = {key: value[k:] for key, value in batch.items()}
    full = learn_step(model, frozen, batch, state, cfg)
    first = learn_step(model, frozen, prefix, state, make_config(unroll_length=k, popart=False))
    second = learn_step(
        model,
        frozen,
        suffix,
        model.initial_state(cfg.batch_size, "cpu"),
        make_config(unroll_length=cfg.unroll_length - k, popart=False),
    )
    for key in ("pg_loss", "baseline_loss", "entropy_loss", "total_loss"):
        assert full[key] == pytest.approx(first[key] + second[key], rel=1e-4, abs=1e-5), key


def test_normalize_advantages_weights_the_policy_gradient_by_the_batch_normalised_advantages(
    agent_factory, make_config, make_rollout
) -> None:
    cfg, model, optimizer, batch, state = setup(
        agent_factory, make_config, make_rollout, normalize_advantages=True, popart=False
    )
    with torch.no_grad():
        outputs, _ = model(batch, state)
    vt = compute_vtrace(split_rollout(batch, outputs, cfg), cfg)
    expected = -(vt.target_action_log_probs * losses.normalized(vt.pg_advantages)).sum()
    plain = -(vt.target_action_log_probs * vt.pg_advantages).sum()
    stats = learn_step(model, optimizer, batch, state, cfg)
    assert stats["pg_loss"] == pytest.approx(expected.item(), rel=1e-4, abs=1e-5)
    assert abs(expected.item() - plain.item()) > 1e-2  # the two differ on this batch


def test_split_rollout_aligns_rewards_discounts_and_actions(make_config, make_rollout) -> None:
    T = 5
    cfg = make_config(unroll_length=T, batch_size=1, discounting=0.9, vtrace_lambda=1.0)
    batch = make_rollout(cfg, torch.Generator().manual_seed(2), done_slots=(1,))
    batch["reward"].zero_()
    batch["reward"][3] = 5.0  # received on arriving at slot 3: the reward of the action at slot 2
    # slot 1 begins an episode: step 0 is the last of the previous one.
    # On-policy with a zero critic: the target logits at each slot are the behaviour logits of that slot.
    outputs = {"policy_logits": batch["policy_logits"].clone(), "baseline": torch.zeros(T + 1, 1)}
    vt = compute_vtrace(split_rollout(batch, outputs, cfg), cfg)
    torch.testing.assert_close(vt.log_rhos, torch.zeros(T, 1))
    # The reward arrives as the runtime wrote it (already scaled): step 2 earns it, step 1 sees it discounted once,
    # step 0 is cut off by the episode boundary.
    torch.testing.assert_close(vt.vs, torch.tensor([[0.0], [4.5], [5.0], [0.0], [0.0]]))


@pytest.mark.parametrize("ending", ["terminal", "truncated"])
def test_a_time_out_bootstraps_from_the_value_and_a_termination_does_not(make_config, make_rollout, ending) -> None:
    T, gamma = 4, 0.9
    cfg = make_config(unroll_length=T, batch_size=1, discounting=gamma, vtrace_lambda=1.0)
    slots = {"done_slots": (2,)} if ending == "terminal" else {"truncated_slots": (2,)}
    batch = make_rollout(cfg, torch.Generator().manual_seed(3), **slots)
    batch["reward"].zero_()
    batch["reward"][2] = 1.0  # the last reward of the episode that ends on arriving at slot 2
    values = torch.tensor([[3.0], [7.0], [11.0], [13.0], [17.0]])  # V at slots 0..T
    outputs = {"policy_logits": batch["policy_logits"].clone(), "baseline": values}
    vt = compute_vtrace(split_rollout(batch, outputs, cfg), cfg)
    # Step 1 ends the episode: a death ends its return there; a time-out goes on as gamma V of the state it was
    # cut in (V(x_1) = 7, the last state the rollout holds of that episode), never into the next episode.
    last = 1.0 + (gamma * 7.0 if ending == "truncated" else 0.0)
    torch.testing.assert_close(vt.vs[1], torch.tensor([last]))
    torch.testing.assert_close(vt.vs[0], torch.tensor([gamma * last]))
    # The next episode bootstraps from its own values only.
    torch.testing.assert_close(vt.vs[3], torch.tensor([gamma * 17.0]))


@pytest.mark.parametrize("normalize_input", [False, True])
def test_a_step_with_a_nan_gradient_is_dropped_whole_and_reported(
    agent_factory, make_config, make_rollout, normalize_input: bool
) -> None:
    """One NaN in one block's gradient (as a health_gathering_supreme run had in its audio organ) must not reach
    the weights, the optimiser's moments, PopArt's or the input's statistics; the next finite step proceeds."""
    cfg, model, optimizer, batch, state = setup(
        agent_factory, make_config, make_rollout, optimizer="adam", normalize_input=normalize_input
    )
    learn_step(model, optimizer, batch, state, cfg, learner_version=0)  # the optimiser has moments now
    weights = copy.deepcopy(model.state_dict())
    moments = copy.deepcopy(optimizer.state_dict())
    victim = next(iter(model.parameter_groups().values()))[0]
    hook = victim.register_hook(lambda grad: grad * math.nan)
    stats = learn_step(model, optimizer, batch, state, cfg, learner_version=1)
    assert stats["nonfinite_step"] == 1.0
    assert math.isnan(stats["grad_norm/total"])
    for name, value in model.state_dict().items():
        assert torch.equal(value, weights[name]), f"{name} moved on a dropped step"
    assert all(
        torch.equal(a, b)
        for state_a, state_b in zip(optimizer.state_dict()["state"].values(), moments["state"].values(), strict=True)
        for a, b in zip(state_a.values(), state_b.values(), strict=True)
    )
    hook.remove()
    stats = learn_step(model, optimizer, batch, state, cfg, learner_version=2)
    assert stats["nonfinite_step"] == 0.0
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(value, weights[name]) for name, value in model.state_dict().items())


def test_normalize_input_merges_the_rollouts_frames_into_the_statistics_before_the_forward(
    agent_factory, make_config, make_rollout
) -> None:
    """The first step's statistics are those of the T x B frames (not slot T, the next rollout's first), and that
    step's pi already sees them: its logits are those of a model holding them from the start."""
    cfg, model, optimizer, batch, state = setup(agent_factory, make_config, make_rollout, normalize_input=True)
    before = copy.deepcopy(model)
    learn_step(model, optimizer, batch, state, cfg, learner_version=0)
    pixels = torch.cat([batch["rgb"][:-1], batch["depth"][:-1]], dim=2).flatten(0, 1).float() / 255.0
    norm = model.vision.input_norm
    assert float(norm.count) == cfg.unroll_length * cfg.batch_size
    torch.testing.assert_close(norm.mean, pixels.mean(dim=0))
    torch.testing.assert_close(norm.var, pixels.var(dim=0, unbiased=False), atol=1e-6, rtol=1e-5)
    # The same first step from a model given those statistics beforehand moves the weights the same way.
    before.vision.input_norm.load_state_dict(norm.state_dict())  # merging the same frames again changes nothing
    optimizer = build_optimizer(before.parameters(), cfg)
    learn_step(before, optimizer, batch, state, cfg, learner_version=0)
    for (name, a), b in zip(model.named_parameters(), before.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_batch_without_a_required_key_is_refused(agent_factory, make_config, make_rollout) -> None:
    cfg, model, optimizer, batch, state = setup(agent_factory, make_config, make_rollout)
    del batch["policy_version"]
    with pytest.raises(KeyError, match="policy_version"):
        learn_step(model, optimizer, batch, state, cfg)


def test_two_ranks_take_the_step_of_one_learner_on_both_batches(agent_factory, make_config, make_rollout, tmp_path):
    """Two real gloo ranks (processes, `rank_worker.py`), each with half the columns of one batch and a model of a
    different seed, against one learner on the whole batch from rank 0's seed: after two steps both ranks hold
    bit-identical weights, equal to the single learner's up to float rounding, and report its losses per rank."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    # With input normalisation: its statistics too must be the union's on every rank.
    whole = make_config(batch_size=6, normalize_input=True)
    half = make_config(batch_size=3, normalize_input=True)
    batch = make_rollout(whole, torch.Generator().manual_seed(1), done_slots=(3,))
    for rank in range(2):
        torch.save({k: v[:, 3 * rank : 3 * rank + 3].clone() for k, v in batch.items()}, tmp_path / f"batch_{rank}.pt")
    (tmp_path / "config.json").write_text(json.dumps({"config": half.to_dict(), "num_actions": NUM_ACTIONS}))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    worker = str(Path(__file__).with_name("rank_worker.py"))
    ranks = [subprocess.Popen([sys.executable, worker, str(r), "2", str(tmp_path)], env=env) for r in range(2)]
    assert [p.wait(timeout=180) for p in ranks] == [0, 0]

    torch.manual_seed(100)
    model = agent_factory(whole)
    optimizer = build_optimizer(model.parameters(), whole)
    single = [
        learn_step(model, optimizer, batch, model.initial_state(6, "cpu"), whole, learner_version=v) for v in range(2)
    ]
    weights = [torch.load(tmp_path / f"rank_{r}.pt", weights_only=True) for r in range(2)]
    reports = [json.loads((tmp_path / f"rank_{r}.json").read_text()) for r in range(2)]
    for name, tensor in model.state_dict().items():
        assert torch.equal(weights[0][name], weights[1][name]), f"{name} differs between the ranks"
        assert torch.allclose(weights[0][name].float(), tensor.float(), rtol=1e-4, atol=1e-6), name
    assert any(not torch.equal(weights[0][name], t) for name, t in agent_factory(whole).state_dict().items())
    for report in reports:
        # The losses are sums over steps: a rank's mean is half the whole batch's.
        assert report["stats"][1]["total_loss"] == pytest.approx(single[1]["total_loss"] / 2, rel=1e-4)
        assert report["stats"][1]["popart_mu"] == pytest.approx(single[1]["popart_mu"], rel=1e-5)
        # Two ready steps, then rank 1 asks to stop, and neither goes on; the counters are the ranks' sums.
        assert report["ready"] == [True, True, False]
        assert (report["env_steps"], report["episodes"], report["env_frames"]) == (30, 3, 120)
        assert report["leader_skill"] == 3
        assert report["step_frames"] == [300, 300]  # each step's frames: both ranks' batches
