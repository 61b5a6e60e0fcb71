"""Reward shaping on hand-made game-variable sequences, checked against the formula written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from beast.config import Config
from beast.envs.shaping import REQUIRED_VARS, RewardShaper, ShapingWeights, shaped_reward

NAMES = ["HEALTH", *REQUIRED_VARS]  # HEALTH first so column lookups cannot rely on position


def state(
    x: float = 0.0,
    y: float = 0.0,
    hits_taken: float = 0,
    hits: float = 0,
    kills: float = 0,
    damage_taken: float = 0,
    health: float = 100,
) -> list[float]:
    values = {
        "HEALTH": health,
        "POSITION_X": x,
        "POSITION_Y": y,
        "HITS_TAKEN": hits_taken,
        "HITCOUNT": hits,
        "KILLCOUNT": kills,
        "DAMAGE_TAKEN": damage_taken,
    }
    return [values[name] for name in NAMES]


def by_hand(prev: list[float], nxt: list[float], cfg: Config) -> float:
    p = dict(zip(NAMES, prev, strict=True))
    n = dict(zip(NAMES, nxt, strict=True))
    z = cfg.shaping_zone_scale
    dx, dy = n["POSITION_X"] - p["POSITION_X"], n["POSITION_Y"] - p["POSITION_Y"]
    r = (
        cfg.shaping_distance_coef * math.sqrt(dx * dx + dy * dy) / z
        + cfg.shaping_hits_taken_coef * (n["HITS_TAKEN"] - p["HITS_TAKEN"])
        + cfg.shaping_hits_coef * (n["HITCOUNT"] - p["HITCOUNT"])
        + cfg.shaping_kills_coef * (n["KILLCOUNT"] - p["KILLCOUNT"])
    )
    phi = dx / z + cfg.shaping_damage_coef * (n["DAMAGE_TAKEN"] - p["DAMAGE_TAKEN"])
    return r + cfg.shaping_alpha * phi


def test_each_term_matches_the_formula_written_out() -> None:
    cfg = Config(shaping_alpha=0.7, shaping_zone_scale=50.0, shaping_damage_coef=-0.02)
    steps = [
        state(),
        state(x=30, y=40),
        state(x=30, y=40, hits=1),
        state(x=10, y=40, hits=1, kills=1),
        state(x=10, y=40, hits=1, kills=1, hits_taken=2, damage_taken=25),
    ]
    columns = {n: i for i, n in enumerate(NAMES)}
    vars_ = np.array(steps, dtype=np.float32)
    got = shaped_reward(vars_[:-1], vars_[1:], columns, ShapingWeights.from_config(cfg))
    want = [by_hand(steps[i], steps[i + 1], cfg) for i in range(len(steps) - 1)]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # The travel term is the Euclidean step length: (30, 40) is 50 map units, one zone at z=50.
    assert got[0] == pytest.approx(cfg.shaping_distance_coef * 1.0 + cfg.shaping_alpha * 30 / 50)
    # Going back along x costs potential even though travel is paid.
    assert got[2] < cfg.shaping_kills_coef


def test_seed_defaults_weight_a_hit_above_a_kill_and_penalise_hits_taken() -> None:
    cfg = Config()
    columns = {n: i for i, n in enumerate(NAMES)}
    weights = ShapingWeights.from_config(cfg)
    base = np.array([state()], dtype=np.float32)
    hit = shaped_reward(base, np.array([state(hits=1)], dtype=np.float32), columns, weights)[0]
    kill = shaped_reward(base, np.array([state(kills=1)], dtype=np.float32), columns, weights)[0]
    hurt = shaped_reward(base, np.array([state(hits_taken=1, damage_taken=10)], dtype=np.float32), columns, weights)[0]
    assert (hit, kill) == (pytest.approx(10.0), pytest.approx(1.0))
    assert hurt == pytest.approx(-3.0 + cfg.shaping_damage_coef * 10)


def test_shaper_tracks_each_env_separately_over_a_sequence() -> None:
    cfg = Config()
    shaper = RewardShaper(NAMES, cfg, num_envs=3)
    first = np.array([state(), state(x=100), state(x=200)], dtype=np.float32)
    shaper.reset(np.arange(3), first)
    # Only envs 2 and 0 step, in that order: each is compared with its own previous vars.
    nxt = np.array([state(x=210, hits=1), state(x=5)], dtype=np.float32)
    got = shaper.step(np.array([2, 0]), nxt, np.zeros(2), np.zeros(2, dtype=bool))
    want = [by_hand(state(x=200), state(x=210, hits=1), cfg), by_hand(state(), state(x=5), cfg)]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # Env 1 did not step, so its next delta is still against its reset state.
    got1 = shaper.step(np.array([1]), np.array([state(x=150)], dtype=np.float32), np.zeros(1), np.zeros(1, bool))
    np.testing.assert_allclose(got1, [by_hand(state(x=100), state(x=150), cfg)], rtol=1e-6)


def test_episode_end_uses_final_vars_and_never_the_next_episodes_first_state() -> None:
    cfg = Config()
    shaper = RewardShaper(NAMES, cfg, num_envs=2)
    shaper.reset(np.arange(2), np.array([state(x=500, kills=3), state(x=500, kills=3)], dtype=np.float32))
    next_episode_first = np.array([state(), state()], dtype=np.float32)  # positions and counters jump back
    final = np.array([state(x=520, kills=4), state(x=520, kills=4)], dtype=np.float32)
    done = np.array([True, True])
    with_final = shaper.step(np.array([0]), next_episode_first[:1], np.zeros(1), done[:1], final_vars=final[:1])
    np.testing.assert_allclose(with_final, [by_hand(state(x=500, kills=3), state(x=520, kills=4), cfg)], rtol=1e-6)
    without_final = shaper.step(np.array([1]), next_episode_first[1:], np.zeros(1), done[1:])
    assert without_final[0] == 0.0
    # Both envs now measure from the new episode's first state.
    again = shaper.step(
        np.arange(2), np.array([state(x=10), state(x=10)], dtype=np.float32), np.zeros(2), np.zeros(2, bool)
    )
    np.testing.assert_allclose(again, [by_hand(state(), state(x=10), cfg)] * 2, rtol=1e-6)


def test_scenario_mode_passes_the_scenario_reward_through() -> None:
    shaper = RewardShaper(["HEALTH"], Config(reward_mode="scenario"), num_envs=2)
    got = shaper.step(np.arange(2), np.zeros((2, 1), np.float32), np.array([1.5, -100.0]), np.array([0, 1]))
    np.testing.assert_array_equal(got, np.array([1.5, -100.0], dtype=np.float32))


def test_shaping_without_the_needed_variables_fails_with_the_fix() -> None:
    with pytest.raises(ValueError, match="--reward-mode=scenario"):
        RewardShaper(["HEALTH"], Config(), num_envs=1)
