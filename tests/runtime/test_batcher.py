"""The dynamic batcher with a real server: partial batches under the wait limit, the batch-size cap, per-env
recurrent state isolation, and the reset of an env's state at `done`."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time

import numpy as np
import torch

from beast.model import build_model
from beast.runtime.server_io import Arrival
from beast.runtime.weights import ModelPolicy, PolicyWeights, RandomPolicy


class RecordingPolicy(RandomPolicy):
    """Uniform random actions; remembers the size of every batch it was asked to act on, and when."""

    def __init__(self, num_actions: int) -> None:
        super().__init__(num_actions)
        self.sizes: list[int] = []
        self.times: list[float] = []

    def act(self, inputs, state):
        self.sizes.append(int(inputs["done"].shape[1]))
        self.times.append(time.monotonic())
        return super().act(inputs, state)


class SlowWarmUpPolicy(RecordingPolicy):
    """Random actions after a warm-up that outlasts the servers' idle timeout, as a first compile does."""

    def __init__(self, num_actions: int, seconds: float) -> None:
        super().__init__(num_actions)
        self.seconds = seconds
        self.warm_up_sizes: list[int] = []
        self.warmed_at = 0.0

    def warm_up(self, inputs, state):
        self.warm_up_sizes.append(int(inputs["done"].shape[1]))
        time.sleep(self.seconds)
        self.warmed_at = time.monotonic()


def run_for(batcher, pool, stop, seconds: float) -> None:
    """Run the batcher for `seconds`, consuming (freeing) every full rollout so it never waits for buffers."""
    thread = threading.Thread(target=batcher.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            ids = pool.take(1, threading.Event(), poll_s=0.05) if pool.occupancy()["full"] else None
            if ids:
                pool.gather(ids)
            else:
                time.sleep(0.01)
    finally:
        stop.set()
        thread.join(10.0)
    assert not thread.is_alive()
    assert batcher.error is None, batcher.error


def test_partial_batches_run_after_the_wait_limit(small_cfg, env_set, batcher_factory) -> None:
    # One of 3 games is frozen (SIGSTOP): its env never arrives, so no batch can be complete, and the other two
    # must still be run every max_inference_wait_ms (5 ms), not every idle poll (POLL_MS, 100 ms) or never.
    cfg = dataclasses.replace(small_cfg, max_inference_batch=64, max_inference_wait_ms=5.0)
    envs, first = env_set(cfg)
    policy = RecordingPolicy(envs.num_actions)
    batcher, pool, stop = batcher_factory(cfg, envs, first, policy, ())
    frozen = envs.slots[0].client.info.engine_pids[0]
    os.kill(frozen, signal.SIGSTOP)
    try:
        run_for(batcher, pool, stop, 3.0)
    finally:
        os.kill(frozen, signal.SIGCONT)
    waits = np.diff(policy.times[5:])
    assert batcher.steps > 3.0 / 0.02, f"only {batcher.steps} steps in 3 s: partial batches waited too long"
    assert np.median(waits) < 0.02, f"median {1e3 * np.median(waits):.1f} ms between batches, asked for 5 ms"
    assert max(policy.sizes[5:]) <= envs.num_envs - 1 < cfg.max_inference_batch


def test_batches_never_exceed_the_cap(small_cfg, env_set, batcher_factory) -> None:
    cfg = dataclasses.replace(small_cfg, envs_per_server=6, max_inference_batch=2, max_inference_wait_ms=50.0)
    envs, first = env_set(cfg)
    policy = RecordingPolicy(envs.num_actions)
    batcher, pool, stop = batcher_factory(cfg, envs, first, policy, ())
    run_for(batcher, pool, stop, 3.0)
    assert batcher.steps > 30
    assert max(policy.sizes) == 2, policy.sizes[:20]
    # The 6 first observations of RESET arrive together and are split into batches of 2, not run as one.
    assert policy.sizes[:3] == [2, 2, 2]


def model_batcher(cfg, envs, first, batcher_factory):
    torch.manual_seed(0)
    model = build_model(cfg, envs.num_actions)
    weights = PolicyWeights(build_model(cfg, envs.num_actions))
    weights.publish(model, 0)
    policy = ModelPolicy(weights, cfg, frames_seen=lambda: 0)
    batcher, _, _ = batcher_factory(cfg, envs, first, policy, model.initial_state(1))
    return batcher, model.eval()


def arrival(first, env_ids, done: bool) -> Arrival:
    """Observations of envs `env_ids` (taken from RESET's results) delivered as a step with the given `done`."""
    results = {key: np.ascontiguousarray(value[env_ids]) for key, value in first[0][1].items()}
    results["done"] = np.full(len(env_ids), int(done), dtype=np.uint8)
    results["crashed"] = np.zeros(len(env_ids), dtype=np.uint8)
    return Arrival(0, np.asarray(env_ids, dtype=np.int64), results)


def test_each_env_keeps_its_own_state(small_cfg, env_set, batcher_factory) -> None:
    cfg = dataclasses.replace(small_cfg, envs_per_server=4)
    envs, first = env_set(cfg)
    batcher, model = model_batcher(cfg, envs, first, batcher_factory)
    for s in batcher.state:  # distinct, non-zero states per env
        s.copy_(torch.randn_like(s))
    before = tuple(s.clone() for s in batcher.state)
    batcher.step([arrival(first, [1, 3], done=False)])
    for s, b in zip(batcher.state, before, strict=True):
        assert torch.equal(s[[0, 2]], b[[0, 2]]), "stepping envs 1 and 3 changed the state of envs 0 and 2"
        assert not torch.equal(s[[1, 3]], b[[1, 3]]), "the stepped envs' state did not advance"
    # And env 3's new state is what the model computes from env 3's old state alone (batch of one).
    inputs = batcher.writer.pool.storage
    slot = int(batcher.writer.slot[3]) - 1
    buf = int(batcher.writer.buffer[3])
    one = {
        key: inputs[key][slot : slot + 1, buf : buf + 1]
        for key in ("rgb", "depth", "enemy", "audio", "reward", "done", "last_action")
    }
    with torch.no_grad():
        _, expected = model(one, tuple(b[3:4] for b in before))
    for s, e in zip(batcher.state, expected, strict=True):
        torch.testing.assert_close(s[3:4], e, atol=1e-5, rtol=1e-5)


def test_done_resets_the_env_state(small_cfg, env_set, batcher_factory) -> None:
    cfg = dataclasses.replace(small_cfg, envs_per_server=2)
    envs, first = env_set(cfg)
    batcher, _ = model_batcher(cfg, envs, first, batcher_factory)
    for s in batcher.state:
        s.copy_(torch.randn_like(s) * 3)
    noisy = tuple(s.clone() for s in batcher.state)
    batcher.step([arrival(first, [0, 1], done=True)])
    after_done = tuple(s.clone() for s in batcher.state)
    # Recorded as an episode start.
    recorded = batcher.writer.buffer[[0, 1]].copy()
    assert batcher.writer.pool.storage["done"][0, recorded].all()
    # Same observations, from a zero state and another last action: an episode start must see neither the
    # previous episode's state nor its last action.
    for s in batcher.state:
        s.zero_()
    batcher.last_action[:] = 1
    batcher.step([arrival(first, [0, 1], done=True)])
    for a, z in zip(after_done, batcher.state, strict=True):
        torch.testing.assert_close(a, z, atol=1e-5, rtol=1e-5)
    # And without done, the old state does matter (otherwise this test pins nothing).
    for s, n in zip(batcher.state, noisy, strict=True):
        s.copy_(n)
    batcher.step([arrival(first, [0, 1], done=False)])
    assert any(not torch.allclose(s, a, atol=1e-3) for s, a in zip(batcher.state, after_done, strict=True))


def test_stepping_resumes_after_a_learner_slower_than_the_idle_timeout(small_cfg, env_set, batcher_factory) -> None:
    # Nobody consumes full rollouts: the batcher fills every buffer, then waits for one far longer than the
    # servers' idle timeout, as it would behind a slow learner step. Its keep-alives must keep the servers serving
    # without taking the results of the steps already sent: once buffers come free, every env steps on at once.
    cfg = dataclasses.replace(small_cfg, envserver_idle_timeout_s=1.5)
    envs, first = env_set(cfg)
    batcher, pool, stop = batcher_factory(cfg, envs, first, RandomPolicy(envs.num_actions), ())
    thread = threading.Thread(target=batcher.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30.0
        while not batcher.writer.waiting_for_buffer:
            assert time.monotonic() < deadline, "the batcher never ran out of buffers"
            time.sleep(0.05)
        time.sleep(4 * cfg.envserver_idle_timeout_s)
        assert batcher.writer.waiting_for_buffer
        assert all(slot.local is not None and slot.local.alive() for slot in envs.slots)
        stalled_at = batcher.steps
        freed = time.monotonic()
        # From now on every full rollout is consumed: a whole rollout more per env must come within a second.
        while batcher.steps < stalled_at + envs.num_envs * (cfg.unroll_length + 1):
            assert time.monotonic() - freed < 1.0, (
                f"{batcher.steps - stalled_at} steps in the second after buffers came free: the stepping stalled"
            )
            ids = pool.take(1, threading.Event(), poll_s=0.01) if pool.occupancy()["full"] else None
            if ids:
                pool.gather(ids)
            else:
                time.sleep(0.005)
    finally:
        stop.set()
        thread.join(10.0)
    assert batcher.error is None, batcher.error
    assert batcher.io.server_errors == [] and batcher.writer.dropped_rollouts == 0


def test_the_warm_up_comes_first_at_the_smallest_and_largest_batch_and_loses_no_server(
    small_cfg, env_set, batcher_factory
) -> None:
    # Two warm-ups of 1.5 idle timeouts each (a first compile takes longer than the timeout): the batcher must keep
    # the servers alive through them, act on nothing before they end, then play on as usual.
    cfg = dataclasses.replace(small_cfg, envserver_idle_timeout_s=1.5, max_inference_batch=2)
    envs, first = env_set(cfg)
    policy = SlowWarmUpPolicy(envs.num_actions, seconds=1.5 * cfg.envserver_idle_timeout_s)
    batcher, pool, stop = batcher_factory(cfg, envs, first, policy, ())
    run_for(batcher, pool, stop, 2 * policy.seconds + 3.0)
    assert policy.warm_up_sizes == [1, 2]  # one env, and the cap (2 < the 3 envs)
    assert policy.times and policy.times[0] >= policy.warmed_at
    assert batcher.steps > 0
    assert batcher.io.server_errors == [] and envs.restarts == 0
