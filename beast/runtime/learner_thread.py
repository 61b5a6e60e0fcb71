"""The learner thread: B full rollouts -> `learn_step` -> publish the new weights, version + 1.

It waits only for rollouts (`BufferPool.take`), never for a rollout *phase*: the batcher keeps acting with the
previous weights while a step runs, which is the policy lag V-trace corrects. Buffers go back to the pool as soon
as they are copied into the staging batch, before the (long) step, so the actors' buffers are held no longer than
a copy. `lock` is held for the step and the publish; the trainer takes it to checkpoint a consistent model,
optimiser and counters between steps. A step `learn_step` drops for a non-finite gradient is counted; the first
one's batch, recurrent state and weights are saved beside the run (`NONFINITE_DUMP`, tensors only, for
`torch.load(..., weights_only=True)`) so its cause can be found, and `NONFINITE_LIMIT` in a row stop the run
with an error: weights that give NaN on every batch will not recover by themselves. With synchronous learners
(`sync`), the ranks meet before and inside every step (`runtime.distributed`), and all of them stop after the same step.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
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

NONFINITE_DUMP = "nonfinite_step.pt"
NONFINITE_LIMIT = 10


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
        dump_dir: Path | None = None,
    ) -> None:
        """`dump_dir`: where the first dropped step's batch is saved (None: not saved)."""
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
        self.dump_dir = dump_dir
        self.nonfinite_steps = 0  # dropped steps in the run
        self.nonfinite_in_a_row = 0
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
                if stats["nonfinite_step"]:
                    self._dropped(batch, initial_state, stats)
                else:
                    self.nonfinite_in_a_row = 0
                self.steps += 1
                self.frames += frames
                self.weights.publish(self.model, self.steps)
            self.step_s += time.perf_counter() - t0
            self.last_stats = stats
            with self._stats_lock:
                for key, value in stats.items():
                    self._sums[key] = self._sums.get(key, 0.0) + value
                self._count += 1

    def _dropped(
        self, batch: dict[str, torch.Tensor], state: tuple[torch.Tensor, ...], stats: dict[str, float]
    ) -> None:
        self.nonfinite_steps += 1
        self.nonfinite_in_a_row += 1
        if self.nonfinite_steps == 1 and self.dump_dir is not None:
            dump = {"batch": batch, "initial_state": list(state), "model": self.model.state_dict()}
            torch.save(dump, self.dump_dir / NONFINITE_DUMP)
        if self.nonfinite_in_a_row >= NONFINITE_LIMIT:
            blocks = ", ".join(f"{k.split('/')[1]} {v:.3g}" for k, v in stats.items() if k.startswith("grad_norm/"))
            where = f"; the first one's batch is in {self.dump_dir / NONFINITE_DUMP}" if self.dump_dir else ""
            raise RuntimeError(
                f"the learner's gradient was not finite in {self.nonfinite_in_a_row} steps in a row (gradient norms: "
                f"{blocks}){where}. The weights are those of the last finite step; try a lower --learning-rate "
                "or --precision=fp32, and resume from the last checkpoint."
            )
