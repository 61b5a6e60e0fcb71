"""Rollout continuity with a real server and the real model (TorchBeast's core_agent_state_test, for beast).

A batcher plays 3 envs of `basic` with a small ViciousTwinMAMBA; a stand-in for the learner takes every full
rollout, copies it out and frees the buffer. The properties pinned are the learner's contract (docs/learner.md):
slot T of rollout k is slot 0 of rollout k+1, the stored initial state is the state the batcher held before slot 0,
and actions, logits, last actions and versions line up with the steps.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import torch

from beast.model import build_model
from beast.runtime.weights import ModelPolicy, PolicyWeights

ROLLOUTS_PER_ENV = 4


def collect(batcher, pool, stop, envs: int, rollouts: int, timeout_s: float = 120.0) -> dict[int, list[dict]]:
    """Run the batcher in a thread; take full rollouts (copies) until every env has `rollouts` of them."""
    thread = threading.Thread(target=batcher.run, daemon=True)
    thread.start()
    got: dict[int, list[dict]] = defaultdict(list)
    deadline = time.monotonic() + timeout_s
    try:
        while min((len(got[e]) for e in range(envs)), default=0) < rollouts:
            assert time.monotonic() < deadline, "rollouts did not arrive in time"
            assert batcher.error is None, batcher.error
            ids = pool.take(1, stop, poll_s=0.2)
            assert ids is not None
            i = ids[0]
            env, index = int(pool.owner[i]), int(pool.rollout_index[i])
            batch, state = pool.gather(ids)  # also frees the buffer
            rollout = {key: value[:, 0].clone() for key, value in batch.items()}
            rollout["initial_state"] = tuple(s[0].clone() for s in state)
            rollout["index"] = index
            got[env].append(rollout)
    finally:
        stop.set()
        thread.join(10.0)
    assert not thread.is_alive()
    assert batcher.error is None, batcher.error
    return got


def test_rollouts_overlap_by_one_and_carry_the_state_before_slot_zero(small_cfg, env_set, batcher_factory) -> None:
    cfg = small_cfg
    T = cfg.unroll_length
    envs, first = env_set(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, envs.num_actions)
    weights = PolicyWeights(build_model(cfg, envs.num_actions))
    weights.publish(model, 0)
    policy = ModelPolicy(weights, cfg, frames_seen=lambda: 0, seed=1)
    batcher, pool, stop = batcher_factory(cfg, envs, first, policy, model.initial_state(1))
    got = collect(batcher, pool, stop, envs.num_envs, ROLLOUTS_PER_ENV)

    model.eval()
    checked_state = 0
    for env in range(envs.num_envs):
        rollouts = sorted(got[env], key=lambda r: r["index"])[:ROLLOUTS_PER_ENV]
        assert [r["index"] for r in rollouts] == list(range(ROLLOUTS_PER_ENV)), "an env's rollouts came out of order"
        assert bool(rollouts[0]["done"][0]), "the first observation after RESET must have done=1"
        for k, r in enumerate(rollouts):
            action, last_action = r["action"], r["last_action"]
            # The action taken at slot t is the last action at slot t+1 (at an episode start the model reads its
            # start token instead, whatever is stored).
            assert torch.equal(last_action[1:], action[:-1])
            assert torch.all(r["policy_version"] == 0)
            assert torch.all((action >= 0) & (action < envs.num_actions))
            # The recorded logits are mu's: recompute them step by step from the stored initial state.
            state = r["initial_state"]
            state = tuple(s.unsqueeze(0) for s in state)
            with torch.no_grad():
                for t in range(T + 1):
                    inputs = {key: value[t : t + 1].unsqueeze(1) for key, value in r.items() if torch.is_tensor(value)}
                    outputs, state = model(inputs, state)
                    torch.testing.assert_close(
                        outputs["policy_logits"][0, 0], r["policy_logits"][t], atol=1e-4, rtol=1e-4
                    )
                    if t == T - 1 and k + 1 < len(rollouts):
                        # The state after slot T-1 is the state before slot T = slot 0 of rollout k+1.
                        for mine, stored in zip(state, rollouts[k + 1]["initial_state"], strict=True):
                            torch.testing.assert_close(mine[0], stored, atol=1e-4, rtol=1e-4)
                        checked_state += 1
                # The learner's sequence pass over all T+1 slots reproduces mu's logits too.
                seq_inputs = {key: value.unsqueeze(1) for key, value in r.items() if torch.is_tensor(value)}
                outputs, _ = model(seq_inputs, tuple(s.unsqueeze(0) for s in r["initial_state"]))
                torch.testing.assert_close(outputs["policy_logits"][:, 0], r["policy_logits"], atol=1e-4, rtol=1e-4)
            if k + 1 < len(rollouts):
                nxt = rollouts[k + 1]
                for key in r:
                    if torch.is_tensor(r[key]):
                        assert torch.equal(r[key][T], nxt[key][0]), f"slot T of rollout {k} != slot 0 of {k + 1}: {key}"
    assert checked_state == envs.num_envs * (ROLLOUTS_PER_ENV - 1)
    # The state is not trivially zero: a test of equal zeros would pin nothing.
    assert any(
        float(s.abs().sum()) > 0 for env in range(envs.num_envs) for r in got[env][1:] for s in r["initial_state"]
    )
