"""The learner thread: B full rollouts -> `learn_step` -> publish the new weights, version + 1.

It waits only for rollouts (`BufferPool.take`), never for a rollout *phase*: the batcher keeps acting with the
previous weights while a step runs, which is the policy lag V-trace corrects. Buffers go back to the pool as soon
as they are copied into the staging batch, before the (long) step, so the actors' buffers are held no longer than
a copy. `lock` is held for the step and the publish; the trainer takes it to checkpoint a consistent model,
optimiser and counters between steps. With synchronous learners (`sync`), the ranks meet before and inside every
step (`runtime.distributed`), and all of them stop after the same step.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from beast.config import Config
from beast.envs.tasks import task_configs
from beast.learn import learn_step
from beast.runtime.buffers import BufferPool
from beast.runtime.distributed import RankSync
from beast.runtime.weights import PolicyWeights


class LearnerThread:
    """Owns the learner model, optimiser and scheduler while the run lasts; `run()` is the thread's body."""

    def __init__(
        self,
        cfg: Config,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        pool: BufferPool,
        weights: PolicyWeights,
        device: torch.device,
        stop: threading.Event,
        learner_steps: int = 0,
        frames: int = 0,
        sync: RankSync | None = None,
    ) -> None:
        self.cfg = cfg
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.pool = pool
        self.weights = weights
        self.device = device
        self.stop = stop
        self.lock = threading.Lock()
        self.steps = learner_steps  # = the version of the learner's weights
        # Frames trained on (per rollout, T x its task's frame skip); the budget `--total-frames` counts these.
        # Kept as a counter rather than derived from `steps`, so a run resumed with another T or B still counts
        # right, and counted from each batch's tasks, so a multi-task batch counts its own frames.
        self.frames = frames
        self.frame_skips = np.array([task.frame_skip for task in task_configs(cfg)], dtype=np.int64)
        self.sync = sync
        self.finished = threading.Event()  # the frame budget is spent
        self.last_stats: dict[str, float] = {}
        self.step_s = 0.0  # time in learn_step (and publishing): the learner's busy time
        self.wait_s = 0.0  # time waiting for B full rollouts
        self.waiting = False
        self.error: BaseException | None = None
        self._sums: dict[str, float] = {}
        self._count = 0
        self._stats_lock = threading.Lock()

    def _frames_of(self, ids: list[int]) -> int:
        """The frames of the rollouts `ids`: T steps each, of its task's frame skip (read before the gather frees
        them; the learner holds them until then)."""
        tasks = self.pool.storage["task"][0, ids].numpy()
        return int(self.cfg.unroll_length * self.frame_skips[tasks].sum())

    def drain_stats(self) -> dict[str, float]:
        """The mean of every learner statistic over the steps since the last call (empty if there were none)."""
        with self._stats_lock:
            sums, count = self._sums, self._count
            self._sums, self._count = {}, 0
        return {key: value / count for key, value in sums.items()} if count else {}

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as err:
            self.error = err
            self.stop.set()

    def _loop(self) -> None:
        # With other ranks, a stop is agreed at `before_step`, which every rank must reach: leaving the loop on the
        # stop event alone would leave the others waiting there for this rank (until the collective's timeout).
        while self.sync is not None or not self.stop.is_set():
            if self.frames >= self.cfg.total_frames:
                self.finished.set()
                return
            self.waiting = True
            t0 = time.perf_counter()
            ids = self.pool.take(self.cfg.batch_size, self.stop)
            self.wait_s += time.perf_counter() - t0
            self.waiting = False
            frames = self._frames_of(ids) if ids is not None else 0
            if self.sync is not None:
                if not self.sync.before_step(ready=ids is not None and not self.stop.is_set(), frames=frames):
                    return  # some rank is stopping: every rank ends after the same step
                frames = self.sync.step_frames
            if ids is None:
                return
            t0 = time.perf_counter()
            with self.lock:
                batch, initial_state = self.pool.gather(ids)
                stats = learn_step(
                    self.model,
                    self.optimizer,
                    batch,
                    initial_state,
                    self.cfg,
                    scheduler=self.scheduler,
                    frames_seen=self.frames,
                    learner_version=self.steps,
                    ranks=self.sync,
                )
                self.steps += 1
                self.frames += frames
                self.weights.publish(self.model, self.steps)
            self.step_s += time.perf_counter() - t0
            self.last_stats = stats
            with self._stats_lock:
                for key, value in stats.items():
                    self._sums[key] = self._sums.get(key, 0.0) + value
                self._count += 1
