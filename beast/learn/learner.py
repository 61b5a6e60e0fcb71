"""One IMPALA learner step (Espeholt et al. 2018, section 4), in the paper's order.

    0. with `--normalize-input`, the batch's frames join the vision input's running statistics
       (`beast.model.input_norm`);
    1. run the current (target) policy pi over the rollouts from their stored initial recurrent state;
    2. V-trace targets v_s and policy-gradient advantages from pi, the behaviour policy mu and the rewards;
    3. PopArt (Hessel et al. 2019): the targets' statistics move, the baseline loss compares normalised values
       and the policy-gradient advantage is divided by sigma;
    4. the three losses: policy gradient, baseline (value) and entropy, summed with their costs;
    5. backward, clip the gradient to a global norm, optimiser step, learning-rate decay, and the critic's last
       layer rescaled so that the values in reward units are unchanged by the new statistics. A step whose
       gradient is not finite is dropped whole (weights, optimiser moments, PopArt's and the input's statistics
       untouched) and reported as `nonfinite_step`: one NaN anywhere makes the global norm NaN, and the clip then
       turns every weight into NaN (a health_gathering_supreme run died so, at 680k frames, NaN in the audio
       organ's gradient).

Diagnostics are gathered along the way and returned as one flat dict of floats; `docs/learner.md` lists them.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping

import torch
from torch import nn

from beast.config import Config
from beast.learn import diagnostics, losses, vtrace
from beast.learn.precision import learner_autocast
from beast.learn.techniques import in_critic_warmup
from beast.model import block_grad_norms
from beast.model.popart import PopArt

# Parameter groups the model exposes; the heads are owned by one loss each, the rest is shared by all three.
BLOCKS = ("vision", "audio", "action", "core", "policy_head", "critic_head")
ACTOR_ONLY = ("policy_head",)
CRITIC_ONLY = ("critic_head",)
LOSS_NAMES = ("pg", "baseline", "entropy")

# Keys every learn_step returns.
STAT_KEYS: tuple[str, ...] = (
    "total_loss",
    "pg_loss",
    "baseline_loss",
    "entropy_loss",
    "entropy",
    *(f"grad_norm/{block}" for block in BLOCKS),
    "grad_norm/total",
    "grad_clip_scale",
    "log_pi_mean",
    "log_mu_mean",
    "rho_mean",
    "rho_min",
    "rho_max",
    "rho_clipped_frac",
    "rho_pg_clipped_frac",
    "policy_lag_mean",
    "policy_lag_max",
    "values_mean",
    "values_std",
    "vs_mean",
    "vs_std",
    "pg_advantages_mean",
    "pg_advantages_std",
    "explained_variance",
    "popart_mu",
    "popart_sigma",
    "reward_mean",
    "done_frac",
    "truncated_frac",
    "logits_at_lower_bound_frac",
    "learning_rate",
    "critic_warmup",
    "nonfinite_step",
)
# Keys added on the steps where the per-loss gradient norms are measured (every `loss_grad_norm_interval`).
PER_LOSS_KEYS: tuple[str, ...] = tuple(f"grad_norm_loss/{name}" for name in LOSS_NAMES)

# Batch entries the learner reads itself (the model reads its observation keys from the same dict).
REQUIRED_KEYS = ("reward", "done", "truncated", "action", "policy_logits", "policy_version")


def split_rollout(
    batch: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor], cfg: Config
) -> dict[str, torch.Tensor]:
    """Align the `[T+1, B]` rollout and the model's `[T+1, B]` outputs into the `[T, B]` V-trace inputs.

    Step t (0 <= t < T) is: the frame at slot t, the action taken there (and its mu logits and weight version),
    the reward, `done` and `truncated` that arrived at slot t+1, and pi's logits and value (in reward units, no
    gradient) at slot t. The bootstrap is V at slot T, cut by the discount where slot T starts a new episode.

    `task` is each step's task (0 in a single-task batch, which need not carry the key) and `available` the
    model's mask of each step's actions (None when it masks none).

    Time-outs are not deaths (Pardo et al. 2018): a step that ended its episode by the time limit bootstraps from
    the value of the state it was cut in, `r_t + gamma V(s_{t+1})`. Its successor slot holds the next episode's
    first frame, so the cut state's value is taken as V(x_t), one step earlier, and added to the reward, while the
    discount is 0 as at any episode end: the traces do not run into the next episode, and the V-trace target of
    that step is exactly `r_t + gamma V`.
    """
    done = batch["done"][1:].bool()
    values = outputs["baseline"][:-1].detach()
    timeout_bootstrap = batch["truncated"][1:].bool().to(values.dtype) * cfg.discounting * values
    task = batch.get("task")
    available = outputs.get("available")
    return {
        "task": (torch.zeros_like(done, dtype=torch.int64) if task is None else task[:-1].to(torch.int64)),
        "available": None if available is None else available[:-1],  # type: ignore[dict-item]
        "target_logits": outputs["policy_logits"][:-1],
        "values": values,
        "bootstrap_value": outputs["baseline"][-1].detach(),
        "behaviour_logits": batch["policy_logits"][:-1].to(torch.float32),
        "actions": batch["action"][:-1],
        "versions": batch["policy_version"][:-1],
        "rewards": batch["reward"][1:].to(values.dtype) + timeout_bootstrap,
        "discounts": (~done).to(values.dtype) * cfg.discounting,
    }


def compute_vtrace(steps: Mapping[str, torch.Tensor], cfg: Config) -> vtrace.VTraceFromLogitsReturns:
    """V-trace on the aligned steps of `split_rollout`, with the config's truncation thresholds."""
    return vtrace.from_logits(
        behavior_policy_logits=steps["behaviour_logits"],
        target_policy_logits=steps["target_logits"],
        actions=steps["actions"],
        discounts=steps["discounts"],
        rewards=steps["rewards"],
        values=steps["values"],
        bootstrap_value=steps["bootstrap_value"],
        clip_rho_threshold=cfg.clip_rho_threshold,
        clip_pg_rho_threshold=cfg.clip_pg_rho_threshold,
        lambda_=cfg.vtrace_lambda,
    )


def _at_bound_frac(logits: torch.Tensor, available: torch.Tensor | None, bound: float) -> torch.Tensor:
    """The share of the (available) logits at `--logit-lower-bound`; 0 with the bound off."""
    if bound >= 0:
        return torch.zeros((), device=logits.device)
    at = logits <= bound
    if available is None:
        return at.to(torch.float32).mean()
    return (at & available).sum().to(torch.float32) / available.sum().clamp(min=1)


def _check_batch(batch: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    missing = [key for key in REQUIRED_KEYS if key not in batch]
    if missing:
        raise KeyError(f"learn_step: batch lacks {', '.join(missing)}; see the layout in learn_step's docstring.")
    slots, batch_size = batch["reward"].shape[:2]
    if slots < 2:
        raise ValueError(f"learn_step: batch needs T+1 >= 2 slots, got {slots}.")
    for key in REQUIRED_KEYS:
        if tuple(batch[key].shape[:2]) != (slots, batch_size):
            raise ValueError(
                f"learn_step: batch[{key!r}] has leading shape {tuple(batch[key].shape[:2])}, "
                f"expected [T+1, B] = {(slots, batch_size)}."
            )
    return slots - 1, batch_size


class RankReduce(typing.Protocol):
    """In-place reductions of a tensor over the ranks of synchronous learners."""

    def sum(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def mean(self, tensor: torch.Tensor) -> torch.Tensor: ...


def _sum_gradients(params: list[nn.Parameter], ranks: RankReduce) -> None:
    """Sum the gradients over the ranks in one collective: flattened into one tensor, then copied back."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = ranks.sum(torch.cat([g.reshape(-1) for g in grads]))
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def learn_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Mapping[str, torch.Tensor],
    initial_state: tuple[torch.Tensor, ...],
    cfg: Config,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    frames_seen: int = 0,
    learner_version: int = 0,
    ranks: RankReduce | None = None,
) -> dict[str, float]:
    """One V-trace actor-critic update on B rollouts of T steps; returns the step's statistics.

    Batch layout (TorchBeast-style, filled by the runtime): a dict of `[T+1, B, ...]` tensors. Slot t holds
      env outputs   rgb uint8[T+1,B,3,64,64], depth uint8[T+1,B,1,64,64], enemy uint8[T+1,B,1,64,64],
                    audio int16[T+1,B,2,1024];
                    reward float32[T+1,B]   received on arriving at slot t, i.e. for the action at slot t-1: the
                                            training reward, shaped, scaled and clipped by the runtime;
                    done bool[T+1,B]        slot t begins a new episode; the model zeroes its state before step t;
                    truncated bool[T+1,B]   that episode end was the time limit, not a termination;
                    last_action int64[T+1,B] the action at slot t-1 (the model reads a start token at `done`);
      agent outputs computed by the behaviour policy mu from the frame at slot t:
                    action int64[T+1,B];
                    policy_logits float32[T+1,B,A] exactly the logits the action was sampled from (perturbed ones
                                            during warm-up, see `techniques.perturb_logits`);
                    policy_version int64[T+1,B] the learner version of the weights that acted;
      and in a multi-task run task int64[T+1,B], the task of the env that filled the rollout (its PopArt
                    statistics and value head; absent: task 0).
    Slot T of rollout k is slot 0 of rollout k+1 (rollouts overlap by one). The agent outputs at slot T and the
    env outputs reward/done at slot 0 are not used here (they belong to the neighbouring rollouts).

    The learner runs the model over all T+1 slots from `initial_state` (the recurrent state before slot 0, stored
    with the rollout). Target logits and values come from slots 0..T-1, the bootstrap value from slot T; actions,
    behaviour logits and versions from slots 0..T-1; rewards and done from slots 1..T, with discounts
    gamma * (1 - done[1:]).

    Time-outs bootstrap from V instead of ending the return (`split_rollout`).

    Keyword arguments:
      scheduler       stepped once after the optimiser step when given (`optim.build_scheduler`).
      frames_seen     frames trained on before this step; decides the critic warm-up.
      learner_version version of the weights in `model` now (the number of updates so far). The policy lag is
                      `learner_version - policy_version`, and the per-loss gradient norms are measured when it is a
                      multiple of `cfg.loss_grad_norm_interval`.
      ranks           synchronous learners (`runtime.distributed`): the gradients (before clipping) are summed
                      over the ranks, PopArt's batch moments averaged and the input's frame sums summed, so every
                      rank takes the step one learner would take on all the ranks' batches together (the losses
                      are sums over steps); the returned statistics are the ranks' means.

    Returns `{name: float}` with every key of `STAT_KEYS`, plus `PER_LOSS_KEYS` on measuring steps.
    """
    _check_batch(batch)
    device = next(model.parameters()).device
    batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
    initial_state = tuple(s.to(device, non_blocking=True) for s in initial_state)
    groups = model.parameter_groups()  # type: ignore[operator]
    warmup = in_critic_warmup(frames_seen, cfg)
    average = ranks.mean if ranks is not None else None
    # What the step moves besides the weights (PopArt's and the input's statistics), to put back if it is dropped.
    buffers_before = {name: value.clone() for name, value in model.named_buffers()}

    # 0. With `--normalize-input` the frames of the rollouts (slot T is the next rollout's slot 0) join the running
    # statistics of the vision input before the forward that normalises them.
    if cfg.normalize_input:
        total = ranks.sum if ranks is not None else None
        model.update_input_norm(batch["rgb"][:-1], batch["depth"][:-1], total)  # type: ignore[operator]

    # 1. The target policy pi and values V over the rollout. The model resets its state at every `done` slot; its
    # trunk runs under `--precision`'s autocast, its heads in float32 (`beast.learn.precision`).
    with learner_autocast(cfg.precision, device):
        outputs, _ = model(batch, initial_state)
    steps = split_rollout(batch, outputs, cfg)

    # 2. V-trace in reward units (targets carry no gradient; only log pi(a) does, for the policy gradient).
    vt = compute_vtrace(steps, cfg)

    # 3. PopArt: new statistics from these targets, each task's from its own steps. The critic's values (reward
    # units, with gradient, from the old statistics) and the targets are both normalised by the new ones; the
    # advantages are measured in sigmas of the step's task.
    popart = typing.cast(PopArt, model.popart)
    old_mu, old_sigma = popart.mu.clone(), popart.sigma.clone()
    task = steps["task"]
    if cfg.popart:
        popart.update(vt.vs, task=task, average=average)
    sigma = popart.sigma.to(vt.vs.dtype)[task]  # [T, B]

    # 4. The three losses, each a sum over the T x B steps, weighted as in the paper's "overall update".
    advantages = vt.pg_advantages / sigma
    if cfg.normalize_advantages:
        advantages = losses.normalized(advantages, average=average)
    pg_loss = losses.policy_gradient_loss(vt.target_action_log_probs, advantages)
    baseline_loss = cfg.baseline_cost * losses.baseline_loss(
        popart.normalize(vt.vs, task), popart.normalize(outputs["baseline"][:-1], task)
    )
    exploration = losses.EXPLORATION_LOSSES[cfg.exploration_loss]
    entropy_loss = cfg.entropy_cost * exploration(steps["target_logits"], steps["available"])
    # Critic warm-up trains the critic alone: the actor's losses stay out of the gradient.
    total_loss = baseline_loss if warmup else pg_loss + baseline_loss + entropy_loss

    stats: dict[str, torch.Tensor] = {}
    interval = cfg.loss_grad_norm_interval
    if interval > 0 and learner_version % interval == 0:
        shared = [p for name, params in groups.items() if name not in ACTOR_ONLY + CRITIC_ONLY for p in params]
        per_loss = diagnostics.per_loss_grad_norms(
            {"pg": pg_loss, "baseline": baseline_loss, "entropy": entropy_loss}, shared
        )
        stats.update({f"grad_norm_loss/{name}": norm for name, norm in per_loss.items()})

    # 5. Backward, clip, step; then the critic's last layer follows the statistics.
    optimizer.zero_grad(set_to_none=True)
    total_loss.backward()
    if warmup:
        # No gradient reaches the policy head without the actor's losses; dropping any that did (e.g. through a
        # model that shares it with the critic) makes sure the optimiser skips the actor-only parameters, which
        # it does for `grad is None` even with momentum or Adam's running moments.
        for name in ACTOR_ONLY:
            for p in groups.get(name, []):
                p.grad = None
    if ranks is not None:
        _sum_gradients(list(model.parameters()), ranks)
    for name, norm in block_grad_norms(model).items():
        stats[f"grad_norm/{name}"] = norm
    params = [p for p in model.parameters() if p.grad is not None]
    max_norm = cfg.grad_norm_clipping if cfg.grad_norm_clipping > 0 else float("inf")
    total_norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else torch.zeros((), device=device)
    learning_rate = optimizer.param_groups[0]["lr"]
    # After the ranks' sum every rank sees the same norm, so all of them drop the same steps.
    nonfinite = not bool(torch.isfinite(total_norm))
    if nonfinite:
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, value in model.named_buffers():
                value.copy_(buffers_before[name])
    else:
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if cfg.popart:
            popart.preserve(typing.cast(nn.Linear, model.value_layer), old_mu, old_sigma)

    # Diagnostics of the step just taken (all detached; fetched with one synchronisation below).
    lag = diagnostics.policy_lag(learner_version, steps["versions"])
    rhos = diagnostics.rho_stats(vt.log_rhos, cfg.clip_rho_threshold, cfg.clip_pg_rho_threshold)
    values_mean, values_std = diagnostics.mean_std(steps["values"])
    vs_mean, vs_std = diagnostics.mean_std(vt.vs)
    adv_mean, adv_std = diagnostics.mean_std(vt.pg_advantages)
    logits = steps["target_logits"].detach()
    num_steps = vt.vs.numel()
    stats.update(
        {
            "total_loss": total_loss.detach(),
            "pg_loss": pg_loss.detach(),
            "baseline_loss": baseline_loss.detach(),
            "entropy_loss": entropy_loss.detach(),
            "entropy": -losses.entropy_loss(logits) / num_steps,
            "grad_norm/total": total_norm,
            "grad_clip_scale": torch.clamp(max_norm / (total_norm + 1e-6), max=1.0),
            "log_pi_mean": vt.target_action_log_probs.detach().mean(),
            "log_mu_mean": vt.behavior_action_log_probs.mean(),
            "rho_mean": rhos["mean"],
            "rho_min": rhos["min"],
            "rho_max": rhos["max"],
            "rho_clipped_frac": rhos["clipped_frac"],
            "rho_pg_clipped_frac": rhos["pg_clipped_frac"],
            "policy_lag_mean": lag["mean"],
            "policy_lag_max": lag["max"],
            "values_mean": values_mean,
            "values_std": values_std,
            "vs_mean": vs_mean,
            "vs_std": vs_std,
            "pg_advantages_mean": adv_mean,
            "pg_advantages_std": adv_std,
            "explained_variance": diagnostics.explained_variance(vt.vs, steps["values"]),
            "popart_mu": popart.mu[0],
            "popart_sigma": popart.sigma[0],
            "reward_mean": steps["rewards"].mean(),
            "done_frac": batch["done"][1:].to(torch.float32).mean(),
            "truncated_frac": batch["truncated"][1:].to(torch.float32).mean(),
            "logits_at_lower_bound_frac": _at_bound_frac(logits, steps["available"], cfg.logit_lower_bound),
            "learning_rate": torch.tensor(float(learning_rate)),
            "critic_warmup": torch.tensor(float(warmup)),
            "nonfinite_step": torch.tensor(float(nonfinite)),
        }
    )
    if popart.mu.shape[0] > 1:
        # Each task's statistics: `popart_mu`/`popart_sigma` above are task 0's, as in a single-task run.
        for k in range(popart.mu.shape[0]):
            stats[f"popart_mu/{k}"], stats[f"popart_sigma/{k}"] = popart.mu[k], popart.sigma[k]
    # Fixed order (STAT_KEYS, then the per-loss norms) so CSV columns and printed tables line up across steps.
    names = [key for key in (*STAT_KEYS, *PER_LOSS_KEYS) if key in stats]
    names += [key for key in stats if key not in names]  # a model with other blocks still gets its norms reported
    values = torch.stack([stats[name].detach().to(device=device, dtype=torch.float32).reshape(()) for name in names])
    if ranks is not None:
        values = ranks.mean(values)
    return dict(zip(names, values.tolist(), strict=True))
