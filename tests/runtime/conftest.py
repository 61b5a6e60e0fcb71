"""Fixtures of the runtime tests: a small model config and a started env set, always cleaned up.

Process checks look only at pids these tests started, never at process names: other people run ViZDoom games on
the same machine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import torch

from beast.config import Config
from beast.runtime.batcher import Batcher
from beast.runtime.buffers import BufferPool, rollout_specs
from beast.runtime.envs import EnvSet
from beast.runtime.weights import Policy

SMALL = {"d_model": 32, "headdim": 16, "d_state": 8, "head_hidden": 32, "action_embed_dim": 16}


@pytest.fixture
def small_cfg() -> Config:
    """basic with a small model: fast enough for 2 CPU cores, the same code paths as the default. Acting in float32
    on every CPU, so that what the batcher records compares with the eager model's float32 forward to 1e-5 (acting
    in bf16, where `--precision auto` picks it, has its own test: tests/runtime/test_weights.py)."""
    return Config(
        scenario="basic",
        reward_mode="scenario",
        num_servers=1,
        envs_per_server=3,
        unroll_length=5,
        precision="fp32",
        **SMALL,
    )


@pytest.fixture
def env_set() -> Iterator[Callable[[Config], tuple[EnvSet, list]]]:
    """start(cfg) -> (EnvSet, first observations); every set started is closed after the test, pass or fail."""
    started: list[EnvSet] = []

    def start(cfg: Config) -> tuple[EnvSet, list]:
        envs = EnvSet(cfg)
        started.append(envs)
        return envs, envs.start()

    yield start
    for envs in started:
        envs.close()


def make_batcher(
    cfg: Config, envs: EnvSet, first: list, policy: Policy, state_template: tuple[torch.Tensor, ...], buffers: int = 0
) -> tuple[Batcher, BufferPool, threading.Event]:
    """A batcher (not yet running) over `envs`, with a pool of `buffers` (default: envs + 2)."""
    assert envs.info is not None
    pool = BufferPool(
        buffers or envs.num_envs + 2,
        cfg.unroll_length,
        rollout_specs(envs.info.obs, envs.num_actions),
        state_template,
    )
    stop = threading.Event()
    return Batcher(cfg, envs, pool, policy, torch.device("cpu"), stop, first), pool, stop


@pytest.fixture
def batcher_factory() -> Callable[..., tuple[Batcher, BufferPool, threading.Event]]:
    return make_batcher


def play_rollouts(
    batcher: Batcher, pool: BufferPool, stop: threading.Event, take: Callable[[int, int, dict], bool], timeout_s: float
) -> None:
    """Run the batcher and hand every full rollout to `take(env, its rollout index, batch)` until `take` returns
    True or `timeout_s` passes; then stop the batcher, which must have stopped cleanly."""
    thread = threading.Thread(target=batcher.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ids = pool.take(1, threading.Event(), poll_s=0.05) if pool.occupancy()["full"] else None
            if not ids:
                time.sleep(0.01)
                continue
            env, index = int(pool.owner[ids[0]]), int(pool.rollout_index[ids[0]])
            batch, _ = pool.gather(ids)
            if take(env, index, batch):
                break
    finally:
        stop.set()
        thread.join(10.0)
    assert not thread.is_alive()
    assert batcher.error is None, batcher.error
