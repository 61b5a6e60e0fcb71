"""The shared acting step: episode starts, the shaped reward of the step in hand, and the goal rule."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from beast.config import Config
from beast.envs.shaping import REQUIRED_VARS, RewardShaper
from beast.runtime.acting import OBS_KEYS, model_inputs, reached_goal, transition

VARS = [*REQUIRED_VARS, "HEALTH"]
X = VARS.index("POSITION_X")


def results(n: int, x: float, done: bool = False, truncated: bool = False) -> dict[str, np.ndarray]:
    vars_ = np.zeros((n, len(VARS)), np.float32)
    vars_[:, X] = x
    return {
        "vars": vars_,
        "final_vars": vars_.copy(),
        "reward": np.ones(n, np.float32),
        "done": np.full(n, done, np.uint8),
        "truncated": np.full(n, truncated, np.uint8),
    }


def test_a_reset_begins_episodes_with_reward_zero_and_restarts_the_shaping_from_there() -> None:
    cfg = dataclasses.replace(Config(), reward_mode="shaped", reward_scale=1.0, shaping_alpha=0.0)
    shaper = RewardShaper(VARS, cfg, 2)
    envs = np.arange(2)
    transition(shaper, envs, results(2, x=0.0), reset=True)
    transition(shaper, envs, results(2, x=500.0))  # 5 zones of new ground
    done, truncated, reward = transition(shaper, envs, results(2, x=900.0), reset=True)
    assert done.all() and not truncated.any() and (reward == 0).all()
    # From the new start at x=900, 100 units are 1 zone of new ground: the old episode's reach is forgotten.
    _, _, reward = transition(shaper, envs, results(2, x=1000.0))
    np.testing.assert_allclose(reward, cfg.shaping_distance_coef * 1.0, rtol=1e-6)


def test_a_step_passes_done_and_truncated_on_and_pays_the_scenario_reward_scaled() -> None:
    cfg = dataclasses.replace(Config(), reward_mode="scenario", reward_scale=0.5)
    shaper = RewardShaper(VARS, cfg, 3)
    envs = np.array([0, 2])
    transition(shaper, envs, results(2, x=0.0), reset=True)
    done, truncated, reward = transition(shaper, envs, results(2, x=1.0, done=True, truncated=True))
    assert done.dtype == bool and done.all() and truncated.all()
    np.testing.assert_allclose(reward, 0.5)


def test_model_inputs_have_one_time_step_and_every_input_the_model_reads() -> None:
    n = 3
    obs = {
        "rgb": np.zeros((n, 3, 64, 64), np.uint8),
        "depth": np.zeros((n, 1, 64, 64), np.uint8),
        "enemy": np.zeros((n, 1, 64, 64), np.uint8),
        "audio": np.zeros((n, 2, 1024), np.int16),
        "vars": np.zeros((n, 4), np.float32),
    }
    inputs = model_inputs(obs, np.ones(n, bool), np.zeros(n, np.float32), np.arange(n), torch.device("cpu"))
    assert set(inputs) == {*OBS_KEYS, "done", "reward", "last_action"}
    assert all(value.shape[:2] == (1, n) for value in inputs.values())
    assert inputs["last_action"][0].tolist() == [0, 1, 2]


def test_the_goal_is_an_episode_that_ended_on_its_own_with_the_player_alive() -> None:
    truncated = np.array([0, 1, 0, 0], np.uint8)
    crashed = np.array([0, 0, 1, 0], np.uint8)
    health = np.array([50.0, 50.0, 50.0, 0.0])
    assert reached_goal(truncated, crashed, health).tolist() == [True, False, False, False]
