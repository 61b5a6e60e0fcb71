"""Evaluation during training: every `eval_interval_frames`, the latest weights play episodes of their own.

The training return is the behaviour policy's, averaged over whatever episodes happened to end, on the training
envs' seeds; it says little about what the greedy agent does. So, on schedule, a copy of the published weights
plays `eval_episodes` episodes greedily and as many sampled, on an env server started for the evaluation (its
games are seeded apart from every training env and alike at every evaluation, so two evaluations compare the
same episodes). The figures go to the logs as `eval/<policy>/<stat>`; weights whose greedy mean return beats
every earlier evaluation are written to `checkpoint_best.pt` beside the latest checkpoint.

A multi-task run (`beast.envs.tasks`) is evaluated task by task, each on a server of its own with that task's
settings: `eval/<task>/<policy>/<stat>`, and `eval/<policy>/suite_score`, the suite score of that policy's mean
returns. Its best checkpoint is the one with the best greedy suite score, since the tasks' returns are on scales
of their own; a run with a task that has no reference points (`TASK_REFERENCES`) has no suite score, and so no
best checkpoint.

It runs in a thread of its own so that acting and learning go on meanwhile; on a 2-core machine it takes some
of their CPU while it runs (a few percent of the wall time at the defaults).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable
from pathlib import Path

from beast.config import Config
from beast.envs import EnvClient, EnvServer
from beast.envs.tasks import ActionSpace, is_multitask, suite_score, task_configs, task_label, task_names
from beast.evaluate import evaluate_policy, summarize
from beast.model import build_model
from beast.runtime.checkpoint import BEST_CHECKPOINT_NAME, save_checkpoint
from beast.runtime.weights import PolicyWeights

EVAL_SEED_OFFSET = 1_000_003  # eval games' seeds: cfg.seed + this, far from every training env's
POLICIES = ("greedy", "sample")
STATS = ("mean_return", "std_return", "mean_length", "mean_kills", "reached_goal_rate")

# Receives an evaluation's statistics; `eval/frames` says which weights (the learner's frames when they were
# copied). The caller logs them with its counters of the moment, so logs.csv stays in frame order.
Report = Callable[[dict[str, float | None]], None]


class PeriodicEvaluator:
    """Starts an evaluation when the learner's frames pass the next multiple of the interval; one at a time."""

    def __init__(
        self,
        cfg: Config,
        weights: PolicyWeights,
        num_actions: int,
        run_path: Path,
        report: Report,
        stop: threading.Event,
        frames: int = 0,
        best_return: float = -math.inf,
        *,
        actions: ActionSpace | None = None,
    ) -> None:
        """`best_return`: the best so far of what picks the best checkpoint (the greedy mean return, or in a
        multi-task run the greedy suite score); `actions`: the run's action space, which a multi-task run needs
        (its model masks each task's missing buttons, and its actions are sent as each task's own)."""
        self.cfg = cfg
        self.weights = weights
        self.num_actions = num_actions
        self.best_path = run_path / BEST_CHECKPOINT_NAME
        self.report = report
        self.stop = stop
        self.interval = cfg.eval_interval_frames
        self.next_at = (frames // self.interval + 1) * self.interval if self.interval > 0 else math.inf
        self.best_return = best_return
        self.actions = actions
        self.model = build_model(cfg, num_actions, None if actions is None else actions.available)
        self.evaluations = 0
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def maybe_start(self, counters: dict[str, int]) -> bool:
        """Start an evaluation of the published weights if `counters["frames"]` reached the next one's turn."""
        if counters["frames"] < self.next_at or self.running or self.stop.is_set():
            return False
        self.next_at = (counters["frames"] // self.interval + 1) * self.interval
        with self.weights.lock:
            self.model.load_state_dict(self.weights.model.state_dict())
        self._thread = threading.Thread(target=self._run, args=(dict(counters),), name="evaluator", daemon=True)
        self._thread.start()
        return True

    def join(self, timeout_s: float) -> bool:
        """Wait for a running evaluation (the stop event cuts it short); True when none is left running."""
        if self._thread is not None:
            self._thread.join(timeout_s)
        return not self.running

    def _run(self, counters: dict[str, int]) -> None:
        try:
            stats = self.evaluate()
        except BaseException as err:  # reported by the trainer; an evaluation never stops training by itself
            self.error = err
            return
        if self.stop.is_set():
            return  # cut short: its figures are not comparable with the others
        self.evaluations += 1
        stats["eval/evaluations"] = float(self.evaluations)
        stats["eval/frames"] = float(counters["frames"])
        if is_multitask(self.cfg):
            greedy, best_key = stats["eval/greedy/suite_score"], "eval/best_greedy_suite_score"
        else:
            greedy, best_key = stats["eval/greedy/mean_return"], "eval/best_greedy_return"
        if greedy is not None and greedy > self.best_return:
            self.best_return = greedy
            stats[best_key] = greedy
            save_checkpoint(
                self.best_path,
                model=self.model,
                optimizer=None,
                scheduler=None,
                counters={**counters, "best_return_milli": round(1000 * greedy)},
                cfg=self.cfg,
                num_actions=self.num_actions,
            )
        self.report(stats)

    def evaluate(self) -> dict[str, float | None]:
        """`eval_episodes` greedy and as many sampled episodes of the copied weights: `eval/<policy>/<stat>`; in a
        multi-task run on each task in turn, `eval/<task>/<policy>/<stat>` and `eval/<policy>/suite_score`."""
        cfg = dataclasses.replace(self.cfg, envs_per_server=self.cfg.eval_envs, seed=self.cfg.seed + EVAL_SEED_OFFSET)
        names = task_names(cfg.scenario)
        multitask = is_multitask(cfg)
        stats: dict[str, float | None] = {}
        returns: dict[str, dict[str, float | None]] = {policy: {} for policy in POLICIES}
        for t, task_cfg in enumerate(task_configs(cfg)):
            if self.stop.is_set():
                return stats  # cut short: `_run` reports none of it
            prefix = f"eval/{task_label(names[t])}/" if multitask else "eval/"
            with EnvServer.from_config(task_cfg) as server, EnvClient(server.address) as client:
                for policy in POLICIES:
                    self.model.train(policy == "sample")  # train(): the model samples its actions; eval(): argmax
                    episodes = evaluate_policy(
                        self.model,
                        client,
                        cfg.eval_episodes,
                        cfg=task_cfg,
                        stop=self.stop,
                        task=t,
                        actions=self.actions,
                    )
                    summary = summarize(episodes) if episodes else {}
                    stats.update({f"{prefix}{policy}/{key}": summary.get(key) for key in STATS})
                    returns[policy][names[t]] = summary.get("mean_return")
        if multitask:
            stats.update({f"eval/{policy}/suite_score": suite_score(returns[policy]) for policy in POLICIES})
        return stats
