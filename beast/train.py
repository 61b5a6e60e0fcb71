"""`run.py --mode=train`: the IMPALA trainer on one machine.

Three threads (docs/architecture.md, "Runtime"):
  * the batcher (inference) plays every env of every server with the model's inference copy and fills rollouts;
  * the learner takes B full rollouts, runs `learn_step`, publishes the weights with version + 1;
  * this (main) thread starts and stops everything, feeds the progress view and the logs, writes checkpoints on
    schedule and at the end, and turns Ctrl-C / SIGTERM into an orderly stop.

Synchronous learners: `torchrun --nproc_per_node=N run.py --mode=train` runs N such trainers, one per rank, whose
learner threads sum their gradients every step (`runtime.distributed`); rank 0 alone logs, shows progress,
evaluates and checkpoints, with the frame and episode counters summed over the ranks.

Stopping: the first SIGINT/SIGTERM sets the stop event. The batcher drops the step in flight (its results are
never read), the learner finishes the step it is in, a final checkpoint is written, the env servers are stopped
(their games and engines with them), and the process exits 0. A second signal, a second or more after the first,
interrupts at once (the servers are still stopped, by `finally` and by their own parent-death watch).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from beast.cli import fail
from beast.config import Config
from beast.device import resolve_device, set_intra_op_threads
from beast.envs.client import EnvServerError, EnvServerTimeoutError
from beast.envs.scenarios import ScenarioError
from beast.envs.server import EnvServerStartError
from beast.learn import LinearDecay, build_optimizer, build_scheduler
from beast.learn.optim import frames_per_learner_step
from beast.model import build_model
from beast.runtime.batcher import Batcher
from beast.runtime.buffers import BufferPool, rollout_specs
from beast.runtime.checkpoint import (
    BEST_CHECKPOINT_NAME,
    CHECKPOINT_NAME,
    CheckpointError,
    check_config,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from beast.runtime.curriculum import Curriculum
from beast.runtime.distributed import (
    RankSync,
    World,
    broadcast_state,
    broadcast_text,
    gather_fingerprints,
    init_process_group,
    rank_config,
    rank_device,
)
from beast.runtime.envs import EnvSet
from beast.runtime.evaluator import PeriodicEvaluator
from beast.runtime.learner_thread import LearnerThread
from beast.runtime.weights import ModelPolicy, PolicyWeights
from beast.signals import stop_on_signals

JOIN_TIMEOUT_S = 60.0  # a learner step of the default model on 2 CPU cores takes ~1-3 s; this is a hang
TICK_S = 0.25


def extend_schedule(
    scheduler: LinearDecay, optimizer: torch.optim.Optimizer, cfg: Config, frames_per_step: int, frames: int
) -> None:
    """After loading a checkpoint's schedule, decay over *this* run's `--total-frames` and batch (`frames_per_step`,
    all ranks together) from the `frames` trained so far: resuming with a larger budget extends the run (without
    this the rate would stay at the old budget's end, zero), and resuming with another batch or number of ranks
    goes on from the same point of the schedule (it counts steps, whose size changed)."""
    scheduler.total_frames = cfg.total_frames
    scheduler.frames_per_step = frames_per_step
    scheduler.warmup_frames = cfg.lr_warmup_frames
    scheduler.last_epoch = frames // frames_per_step
    factor = scheduler.factor(scheduler.last_epoch)
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = float(base) * factor
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def best_return(run_path: Path) -> float:
    """The greedy return of the run's best checkpoint (-inf without one), so a resumed run keeps the real best."""
    path = run_path / BEST_CHECKPOINT_NAME
    if not path.is_file():
        return -math.inf
    try:
        return load_checkpoint(path)["counters"].get("best_return_milli", -math.inf) / 1000
    except CheckpointError:
        return -math.inf


class Meter:
    """Turns the threads' running totals into the rates and fractions the view and the logs show."""

    def __init__(
        self,
        batcher: Batcher,
        learner: LearnerThread,
        pool: BufferPool,
        cfg: Config,
        env_totals: Callable[[], tuple[int, int, int]],
    ) -> None:
        self.batcher, self.learner, self.pool, self.cfg = batcher, learner, pool, cfg
        # () -> the run's (env steps, episodes, env frames): all ranks'; the model and learner times are ours
        self.env_totals = env_totals
        self._last = self._totals()

    def _totals(self) -> dict[str, float]:
        b, lt = self.batcher, self.learner
        env_steps, _, env_frames = self.env_totals()
        return {
            "time": time.monotonic(),
            "env_steps": env_steps,
            "env_frames": env_frames,
            "batches": b.batches,
            "inference_s": b.inference_s,
            "wait_buffer_s": b.writer.wait_buffer_s,
            "learner_frames": lt.frames,
            "step_s": lt.step_s,
            "wait_s": lt.wait_s,
        }

    def rates(self) -> dict[str, float]:
        """Rates since the previous call: frames/s of envs (sampled), inference (per second of model time) and
        learner (consumed); the share of wall time the model, the learner and the waits took."""
        now, last = self._totals(), self._last
        self._last = now
        dt = max(1e-9, now["time"] - last["time"])
        env_frames = now["env_frames"] - last["env_frames"]
        inference_s = now["inference_s"] - last["inference_s"]
        batches = now["batches"] - last["batches"]
        return {
            "env_fps": env_frames / dt,
            "inference_fps": env_frames / inference_s if inference_s > 0 else 0.0,
            "learner_fps": (now["learner_frames"] - last["learner_frames"]) / dt,
            "inference_busy_frac": inference_s / dt,
            "learner_busy_frac": (now["step_s"] - last["step_s"]) / dt,
            "learner_wait_frac": (now["wait_s"] - last["wait_s"]) / dt,
            "actor_wait_frac": (now["wait_buffer_s"] - last["wait_buffer_s"]) / dt,
            "mean_inference_batch": (now["env_steps"] - last["env_steps"]) / batches if batches else 0.0,
        }

    def waiting(self) -> str:
        if self.batcher.warming_up:
            return "compiling the acting step (once per run)"
        if self.batcher.writer.waiting_for_buffer:
            return "actors wait: all buffers full (learner is the bottleneck)"
        if self.learner.waiting:
            return "learner waits for rollouts"
        return ""


class _Silent:
    """The logger and the progress view of a rank other than 0: rank 0 alone writes the run's files and shows it."""

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def log(self, counters: Any, stats: Any) -> None:
        return None

    def update(self, snapshot: Any) -> None:
        return None


class Trainer:
    """Everything one run holds. `build()` starts the env servers and makes the model, optimiser, buffer pool,
    learner and batcher (after it, `counters`, `save` and `stats` work); `run()` builds if need be, then trains until
    the frame budget is spent or a stop is requested."""

    def __init__(self, cfg: Config, run_path: Path, stop: threading.Event, world: World | None = None) -> None:
        self.cfg = cfg
        self.run_path = run_path
        self.stop = stop
        self.world = world or World()
        self.device = rank_device(resolve_device(cfg.device), self.world)
        self.envs = EnvSet(rank_config(cfg, self.world))
        self.counters_base = {"env_steps": 0, "episodes": 0, "env_frames": 0}
        self.checkpoint_path = run_path / CHECKPOINT_NAME
        self.resumed_at: int | None = None  # the frames of the checkpoint a resumed run continues from
        self._errors_reported = 0
        self.built = False

    def build(self) -> Trainer:
        cfg = self.cfg
        payload = self._load_resume()
        self.curriculum = Curriculum(cfg, skill=payload["counters"].get("doom_skill") if payload else None)
        if self.curriculum.enabled:
            self.envs.cfg = dataclasses.replace(self.envs.cfg, doom_skill=self.curriculum.skill)
        first = self.envs.start()
        num_actions = self.envs.num_actions
        available = self.envs.actions.available  # type: ignore[union-attr]
        if payload is not None and payload["num_actions"] != num_actions:
            fail(f"the checkpoint's model has {payload['num_actions']} actions; this scenario has {num_actions}.")
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, num_actions, available).to(self.device)
        optimizer = build_optimizer(model.parameters(), cfg)
        frames_per_step = frames_per_learner_step(cfg, self.world.size)
        scheduler = build_scheduler(optimizer, cfg, frames_per_step)
        counters: dict[str, int] = {}
        if payload is not None:
            model.load_state_dict(payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
            if payload["scheduler"] is not None:
                scheduler.load_state_dict(payload["scheduler"])
                extend_schedule(scheduler, optimizer, cfg, frames_per_step, payload["counters"].get("frames", 0))
            counters = dict(payload["counters"])
            self.counters_base = {k: counters.get(k, 0) for k in self.counters_base}
            self._say_world_change(counters.get("ranks", 1))
        broadcast_state(model, self.world)
        model.train()
        inference = build_model(cfg, num_actions, available).to(self.device)
        weights = PolicyWeights(inference)
        weights.publish(model, counters.get("learner_steps", 0))

        buffers = max(cfg.buffer_count(), self.envs.num_envs + cfg.batch_size)  # remote servers add envs
        specs = rollout_specs(self.envs.info.obs, num_actions)  # type: ignore[union-attr]
        pool = BufferPool(
            buffers, cfg.unroll_length, specs, model.initial_state(1, "cpu"), pin_memory=self.device.type == "cuda"
        )
        self.sync = (
            RankSync(
                self.world,
                self.device,
                local_counts=self._local_totals,
                skill=lambda: self.envs.cfg.doom_skill,
            )
            if self.world.distributed
            else None
        )
        learner = LearnerThread(
            cfg,
            model,
            optimizer,
            scheduler,
            pool,
            weights,
            self.device,
            self.stop,
            learner_steps=counters.get("learner_steps", 0),
            frames=counters.get("frames", 0),
            sync=self.sync,
            dump_dir=self.run_path if self.world.is_main else None,
        )
        rank_cfg = self.envs.cfg
        policy = ModelPolicy(weights, cfg, lambda: learner.frames, seed=rank_cfg.seed + learner.steps)
        self.batcher = Batcher(rank_cfg, self.envs, pool, policy, self.device, self.stop, first)
        self.learner, self.pool, self.weights = learner, pool, weights
        self.model, self.optimizer, self.scheduler, self.num_actions = model, optimizer, scheduler, num_actions
        self.meter = Meter(self.batcher, learner, pool, cfg, self._run_totals)
        self.resumed_at = counters.get("frames") if payload is not None else None
        self.built = True
        return self

    def run(self) -> int:
        from beast.progress import ProgressView
        from beast.runtime.logs import RunLogger

        if not self.built:
            self.build()
        cfg, batcher, learner = self.cfg, self.batcher, self.learner
        threads = [
            threading.Thread(target=batcher.run, name="batcher", daemon=True),
            threading.Thread(target=learner.run, name="learner", daemon=True),
        ]
        resumed = self.resumed_at is not None
        main = self.world.is_main
        with (
            RunLogger(self.run_path, cfg, purge_from=self.resumed_at) if main else _Silent() as logger,
            ProgressView(cfg, cfg.total_frames) if main else _Silent() as view,
        ):
            self.evaluator = PeriodicEvaluator(
                # Rank 0 evaluates (and so runs the curriculum) for every rank.
                self.envs.cfg if main else dataclasses.replace(self.envs.cfg, eval_interval_frames=0),
                self.weights,
                self.num_actions,
                self.run_path,
                report=lambda stats: logger.log(self.counters(), self._after_evaluation(stats)),
                stop=self.stop,
                frames=learner.frames,
                best_return=best_return(self.run_path) if resumed else -math.inf,
                actions=self.envs.actions,
            )
            for t in threads:
                t.start()
            try:
                self._watch(logger, view)
            finally:
                if learner.finished.is_set():
                    # The budget is spent: an evaluation under way, or one due since the last tick, finishes first.
                    self.evaluator.join(JOIN_TIMEOUT_S)
                    self.evaluator.maybe_start(self.counters())
                    self.evaluator.join(JOIN_TIMEOUT_S)
                self.stop.set()
                for t in threads:
                    t.join(JOIN_TIMEOUT_S)
                evaluated = self.evaluator.join(JOIN_TIMEOUT_S)
                error = batcher.error or learner.error
                stuck = [t.name for t in threads if t.is_alive()] + ([] if evaluated else ["evaluator"])
                if not stuck:
                    self.save()
                    logger.log(self.counters(), self.stats())
        if error is not None:
            raise error
        if not stuck and self.world.distributed and not self._same_weights_everywhere():
            return 1
        counters = self.counters()
        if stuck:
            # Saving while a thread may still change the model would write a checkpoint that never existed.
            print(
                f"beast: the {' and '.join(stuck)} thread did not stop within {JOIN_TIMEOUT_S:.0f} s; no final "
                f"checkpoint written (the last periodic one, if any, is {self.checkpoint_path}).",
                file=sys.stderr,
            )
            return 1
        if not main:
            return 0
        print(
            f"beast: stopped at {counters['frames']:,} frames ({counters['learner_steps']:,} learner steps, "
            f"{counters['episodes']:,} episodes); checkpoint {self.checkpoint_path}"
        )
        return 0

    def _load_resume(self) -> dict[str, Any] | None:
        if not self.cfg.resume:
            return None
        path = latest_checkpoint(self.run_path)
        if path is None:
            fail(f"nothing to resume in {self.run_path}: it holds no checkpoint.")
        try:
            payload = load_checkpoint(path, map_location="cpu")
            check_config(payload["config"], self.cfg, path)
        except CheckpointError as err:
            fail(str(err))
        return payload

    def _watch(self, logger: Any, view: Any) -> None:
        """The main thread's loop: progress, logs and checkpoints on schedule, until done or stopped."""
        cfg = self.cfg
        next_log = time.monotonic() + cfg.log_interval_s
        next_checkpoint = time.monotonic() + cfg.checkpoint_interval_min * 60.0
        logged: dict[str, float | None] = {}
        while not self.stop.is_set() and not self.learner.finished.is_set():
            time.sleep(TICK_S)
            now = time.monotonic()
            if now >= next_log:
                next_log = now + cfg.log_interval_s
                logged = self.stats()
                logger.log(self.counters(), logged)
            # The view shows the row last logged, with the counters and the buffers of this moment.
            view.update({**logged, **self.counters(), **self._occupancy(), "waiting": self.meter.waiting()})
            self.evaluator.maybe_start(self.counters())
            if self.sync is not None and self.sync.leader_skill != self.envs.cfg.doom_skill:
                self._set_skill(self.sync.leader_skill)  # rank 0's curriculum moved on
            self._report_server_errors()
            if self.evaluator.error is not None:
                print(f"beast: evaluation failed ({self.evaluator.error}); training goes on", file=sys.stderr)
                self.evaluator.error = None
            if now >= next_checkpoint:
                next_checkpoint = now + cfg.checkpoint_interval_min * 60.0
                self.save()

    def _report_server_errors(self) -> None:
        """Say on stderr what happened to a server (down, restarting, a failed restart) as it happens."""
        errors = self.batcher.io.server_errors
        count = len(errors)  # other threads append: take the ones there now, the rest next tick
        for message in errors[self._errors_reported : count]:
            print(f"beast: {message}", file=sys.stderr)
        self._errors_reported = count

    def counters(self) -> dict[str, int]:
        env_steps, episodes, env_frames = self._run_totals()
        return {
            "frames": self.learner.frames,
            "learner_steps": self.learner.steps,
            "env_steps": self.counters_base["env_steps"] + env_steps,
            "env_frames": self.counters_base["env_frames"] + env_frames,
            "episodes": self.counters_base["episodes"] + episodes,
            "doom_skill": self.envs.cfg.doom_skill,
            "ranks": self.world.size,
        }

    def _after_evaluation(self, stats: dict[str, float | None]) -> dict[str, float | None]:
        """The curriculum's turn (evaluator thread): a higher skill restarts the local servers and the evaluator
        plays it from now on, with a best return of its own."""
        skill = self.curriculum.after_evaluation(stats)
        if skill is not None:
            self._set_skill(skill)
        return stats

    def _set_skill(self, skill: int) -> None:
        self.envs.cfg = dataclasses.replace(self.envs.cfg, doom_skill=skill)
        self.evaluator.cfg = dataclasses.replace(self.evaluator.cfg, doom_skill=skill)
        self.evaluator.best_return = -math.inf
        self.batcher.io.restart_local = f"curriculum: doom skill {skill}"

    def _same_weights_everywhere(self) -> bool:
        """After the last step every rank must hold the same weights; rank 0 says so, or names the ranks that differ."""
        prints = gather_fingerprints(self.model, self.world, self.device)
        if not self.world.is_main:
            return len(set(prints)) == 1
        if len(set(prints)) == 1:
            print(f"beast: the {self.world.size} ranks hold the same weights (crc32 {prints[0]:08x})")
            return True
        differ = [rank for rank, value in enumerate(prints) if value != prints[0]]
        print(f"beast: ranks {differ} hold weights that differ from rank 0's: the learners diverged", file=sys.stderr)
        return False

    def _run_totals(self) -> tuple[int, int, int]:
        """(env steps, episodes, env frames) of this run so far: every rank's, as of the last learner step, with
        ranks."""
        if self.sync is not None:
            return self.sync.env_steps, self.sync.episodes, self.sync.env_frames
        return self._local_totals()

    def _local_totals(self) -> tuple[int, int, int]:
        """(env steps, episodes, env frames) of this rank's envs so far."""
        return self.batcher.steps, self.batcher.episode_log.episodes, self.batcher.frames

    def _say_world_change(self, saved_ranks: int) -> None:
        if saved_ranks != self.world.size and self.world.is_main:
            print(
                f"beast: resuming a run of {saved_ranks} rank(s) on {self.world.size}: the counters and the learning "
                f"rate's schedule go on by frames; each step now trains on {self.world.size} x B rollouts.",
                file=sys.stderr,
            )

    def stats(self) -> dict[str, float | None]:
        """One row of the logs, and what the progress view shows: the learner's means since the last row, the rates,
        the episodes, the buffers and the servers' health."""
        stats: dict[str, float | None] = dict(self.learner.drain_stats())
        stats.update(self.meter.rates())
        stats.update(self.batcher.episode_stats())
        stats.update(self._occupancy())
        stats["dropped_rollouts"] = float(self.batcher.writer.dropped_rollouts)
        stats["server_restarts"] = float(self.envs.restarts)
        return stats

    def _occupancy(self) -> dict[str, float | None]:
        return {f"buffers_{k}": float(v) for k, v in self.pool.occupancy().items()}

    def save(self) -> None:
        """Checkpoint between learner steps (the learner's lock), so model, optimiser and counters agree; rank 0's,
        as every rank holds the same weights."""
        if not self.world.is_main:
            return
        with self.learner.lock:
            save_checkpoint(
                self.checkpoint_path,
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                counters=self.counters(),
                cfg=self.cfg,
                num_actions=self.num_actions,
            )


def main(cfg: Config) -> int:
    from beast.runtime.run_dir import run_dir

    try:
        world = World.from_env()
        rank_config(cfg, world)
    except ValueError as err:
        fail(str(err))
    stop = threading.Event()
    with stop_on_signals(stop):
        device = rank_device(resolve_device(cfg.device), world)
        set_intra_op_threads(cfg.num_threads, device)
        if world.distributed:
            init_process_group(world, device, cfg.distributed_timeout_s)
        try:
            # Rank 0 chooses (or checks) the run folder; the others write nothing there but learn where it is.
            run_path = Path(broadcast_text(str(run_dir(cfg)) if world.is_main else "", world, device))
            trainer = Trainer(cfg, run_path, stop, world)
            try:
                return trainer.run()
            except (EnvServerStartError, ScenarioError) as err:
                fail(str(err))
            except (EnvServerError, EnvServerTimeoutError) as err:
                fail(f"env servers failed: {err}")
            finally:
                trainer.envs.close()
        finally:
            if world.distributed:
                torch.distributed.destroy_process_group()
