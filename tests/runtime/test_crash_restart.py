"""A local env server killed mid-run: the trainer restarts it, drops its envs' unfinished rollouts (never
submitting half of one), and its envs start over from a reset while the other server's envs carry on untouched."""

from __future__ import annotations

import dataclasses
import os
import signal

from beast.runtime.weights import RandomPolicy
from tests.runtime.conftest import play_rollouts

ROLLOUTS_BEFORE_KILL = 8
ROLLOUTS_AFTER_RESTART = 2  # per env of the killed server


def test_a_killed_server_is_restarted_and_its_unfinished_rollouts_are_dropped(
    small_cfg, env_set, batcher_factory
) -> None:
    cfg = dataclasses.replace(small_cfg, num_servers=2, envs_per_server=2)
    envs, first = env_set(cfg)
    batcher, pool, stop = batcher_factory(cfg, envs, first, RandomPolicy(envs.num_actions), ())
    victim, survivor = envs.slots
    assert victim.local is not None
    old_pid = victim.local.pid
    victim_envs = range(victim.offset, victim.offset + victim.num_envs)
    survivor_envs = range(survivor.offset, survivor.offset + survivor.num_envs)

    rollouts: list[tuple[int, int, bool]] = []  # (env, its rollout index, slot 0 begins an episode)
    killed = False

    def take(env: int, index: int, batch: dict) -> bool:
        nonlocal killed
        rollouts.append((env, index, bool(batch["done"][0, 0])))
        if not killed and len(rollouts) >= ROLLOUTS_BEFORE_KILL:
            os.kill(old_pid, signal.SIGKILL)
            killed = True
        after = [r for r in rollouts[ROLLOUTS_BEFORE_KILL:] if r[0] in victim_envs]
        return killed and all(sum(r[0] == e for r in after) >= ROLLOUTS_AFTER_RESTART for e in victim_envs)

    play_rollouts(batcher, pool, stop, take, timeout_s=60.0)
    assert killed

    assert victim.up and victim.local is not None and victim.local.pid != old_pid
    assert any("restarting" in message for message in batcher.io.server_errors), batcher.io.server_errors
    assert batcher.writer.dropped_rollouts == victim.num_envs  # each env was filling one when its server died

    for env in victim_envs:
        mine = [(index, begins) for e, index, begins in rollouts if e == env]
        indices = [index for index, _ in mine]
        gaps = [i for i in range(1, len(indices)) if indices[i] != indices[i - 1] + 1]
        # Exactly one rollout index is missing: the one the crash interrupted, dropped instead of submitted.
        assert len(gaps) == 1 and indices[gaps[0]] == indices[gaps[0] - 1] + 2, indices
        # The first rollout after it comes from the restarted server's RESET: it begins an episode.
        assert mine[gaps[0]][1], f"env {env}: the first rollout after the restart does not begin an episode"
    for env in survivor_envs:
        indices = [index for e, index, _ in rollouts if e == env]
        assert indices == list(range(indices[0], indices[0] + len(indices))), indices

    # No buffer leaked: every one is free, full, or the one an env is filling now.
    occupancy = pool.occupancy()
    held = int((batcher.writer.buffer >= 0).sum())
    assert occupancy["free"] + occupancy["full"] + held == pool.num_buffers, (occupancy, held)
