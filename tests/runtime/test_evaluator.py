"""PeriodicEvaluator against real env servers: a single-task run's statistics keys as they have always been, and a
multi-task run's figures per task, its suite scores and the best checkpoint they choose."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from beast.config import Config
from beast.envs.tasks import ActionSpace, suite_score
from beast.model import build_model
from beast.runtime.checkpoint import BEST_CHECKPOINT_NAME, load_checkpoint
from beast.runtime.evaluator import POLICIES, STATS, PeriodicEvaluator
from beast.runtime.weights import PolicyWeights

TASKS = ["basic", "defend_the_center"]
TASK_BUTTONS = [["MOVE_LEFT", "MOVE_RIGHT", "ATTACK"], ["TURN_LEFT", "TURN_RIGHT", "ATTACK"]]  # their .cfg files'
INTERVAL = 1000
COUNTERS = {"frames": INTERVAL, "learner_steps": 3}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """A T=1 step of a small model gains nothing from a second thread on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def evaluate_once(cfg: Config, actions: ActionSpace, run_path: Path) -> dict[str, float | None]:
    """One evaluation of a fresh model's weights, as the trainer starts it; the statistics it reported."""
    torch.manual_seed(0)
    weights = PolicyWeights(build_model(cfg, actions.num_actions, actions.available))
    reports: list[dict[str, float | None]] = []
    evaluator = PeriodicEvaluator(
        cfg, weights, actions.num_actions, run_path, reports.append, threading.Event(), actions=actions
    )
    assert evaluator.maybe_start(COUNTERS)
    assert evaluator.join(180.0) and evaluator.error is None, evaluator.error
    (stats,) = reports
    return stats


def test_a_single_task_evaluation_logs_the_keys_it_always_has(small_cfg: Config, tmp_path: Path) -> None:
    cfg = dataclasses.replace(small_cfg, eval_envs=2, eval_episodes=2, eval_interval_frames=INTERVAL)
    stats = evaluate_once(cfg, ActionSpace.for_tasks(TASK_BUTTONS[:1], TASKS[:1]), tmp_path)
    per_policy = {f"eval/{policy}/{stat}" for policy in POLICIES for stat in STATS}
    assert set(stats) == per_policy | {"eval/evaluations", "eval/frames", "eval/best_greedy_return"}
    greedy = stats["eval/greedy/mean_return"]
    assert greedy is not None and stats["eval/best_greedy_return"] == greedy
    assert load_checkpoint(tmp_path / BEST_CHECKPOINT_NAME)["counters"]["best_return_milli"] == round(1000 * greedy)


def test_a_multitask_evaluation_scores_each_task_and_keeps_the_best_suite_score(
    small_cfg: Config, tmp_path: Path
) -> None:
    cfg = dataclasses.replace(
        small_cfg, scenario=",".join(TASKS), eval_envs=1, eval_episodes=1, eval_interval_frames=INTERVAL
    )
    actions = ActionSpace.for_tasks(TASK_BUTTONS, TASKS)
    stats = evaluate_once(cfg, actions, tmp_path)
    per_task = {f"eval/{task}/{policy}/{stat}" for task in TASKS for policy in POLICIES for stat in STATS}
    suite = {f"eval/{policy}/suite_score" for policy in POLICIES}
    assert set(stats) == per_task | suite | {"eval/evaluations", "eval/frames", "eval/best_greedy_suite_score"}
    for policy in POLICIES:
        returns = {task: stats[f"eval/{task}/{policy}/mean_return"] for task in TASKS}
        assert stats[f"eval/{policy}/suite_score"] == pytest.approx(suite_score(returns))
    length = stats["eval/basic/greedy/mean_length"]
    assert length is not None and length <= 38, "basic plays its spec's 8 tics a step: its timeout within 38 steps"

    best = load_checkpoint(tmp_path / BEST_CHECKPOINT_NAME)
    greedy = stats["eval/greedy/suite_score"]
    assert greedy is not None and stats["eval/best_greedy_suite_score"] == greedy
    assert best["counters"] == {**COUNTERS, "best_return_milli": round(1000 * greedy)}
    model = build_model(Config.from_dict(best["config"]), best["num_actions"], actions.available)
    model.load_state_dict(best["model"])  # the weights of a 2-task model, which --mode=test plays
