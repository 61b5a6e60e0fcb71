"""The training reward on hand-made game-variable sequences: each term against its definition, and the properties
that make the shaping sound (no pay for oscillating, potential terms that telescope away, time-outs kept apart)."""

from __future__ import annotations

import numpy as np
import pytest

from beast.config import Config
from beast.envs.shaping import REQUIRED_VARS, SHAPED_TERMS, RewardShaper

NAMES = ["HEALTH", *REQUIRED_VARS]  # HEALTH first so column lookups cannot rely on position
TERM = {name: i for i, name in enumerate(SHAPED_TERMS)}


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


def play(
    shaper: RewardShaper, states: list[list[float]], scenario: list[float] | None = None, end: str = ""
) -> np.ndarray:
    """Env 0 from states[0] through the rest; `end` = "terminal" or "truncated" ends the episode on the last step.
    Returns the terms [steps, K] (unscaled), read back from the per-episode sums step by step."""
    shaper.reset(np.array([0]), np.array([states[0]], np.float32))
    rewards = scenario or [0.0] * (len(states) - 1)
    terms = []
    for i, nxt in enumerate(states[1:]):
        last = i == len(states) - 2
        done = np.array([last and bool(end)])
        before = shaper.episode_terms[0].copy()
        arrived = np.array([nxt], np.float32)
        # On an episode end the server already sends the next episode's first state; the ended one's as final.
        vars_ = np.array([state(x=-999)], np.float32) if done[0] else arrived
        shaper.step(np.array([0]), vars_, np.array([rewards[i]]), done, np.array([end == "truncated"]), arrived)
        terms.append((shaper._finished[-1] if done[0] else shaper.episode_terms[0]) - before)
    return np.array(terms)


def test_each_term_follows_its_definition() -> None:
    cfg = Config(reward_mode="shaped", shaping_alpha=0.7, shaping_zone_scale=50.0, discounting=0.9)
    shaper = RewardShaper(NAMES, cfg, num_envs=1)
    steps = [
        state(x=10, y=10),
        state(x=40, y=50),  # 50 units from the start: one zone of new ground
        state(x=40, y=50, hits=1),
        state(x=20, y=50, hits=1, kills=1),  # back towards the start: no new ground
        state(x=20, y=50, hits=1, kills=1, hits_taken=2, damage_taken=25),
    ]
    terms = play(shaper, steps)
    z, gamma, w_d = 50.0, 0.9, cfg.shaping_damage_coef

    def phi(s: list[float]) -> float:
        return (s[NAMES.index("POSITION_X")] - 10) / z + w_d * s[NAMES.index("DAMAGE_TAKEN")]

    np.testing.assert_allclose(terms[:, TERM["travel"]], [0.5, 0, 0, 0])
    np.testing.assert_allclose(terms[:, TERM["hits"]], [0, 10, 0, 0])
    np.testing.assert_allclose(terms[:, TERM["kills"]], [0, 0, 1, 0])
    np.testing.assert_allclose(terms[:, TERM["hits_taken"]], [0, 0, 0, -6])
    np.testing.assert_allclose(
        terms[:, TERM["potential"]], [0.7 * (gamma * phi(steps[i + 1]) - phi(steps[i])) for i in range(4)], rtol=1e-6
    )
    np.testing.assert_allclose(terms[:, TERM["terminal"]], 0)


def test_oscillating_in_place_earns_no_travel_after_the_first_swing_and_loses_potential() -> None:
    cfg = Config(reward_mode="shaped")
    swings = [state(x=100.0 * (i % 2)) for i in range(101)]
    terms = play(RewardShaper(NAMES, cfg, num_envs=1), swings)
    # 50 round trips of 100 units: the farthest reach is one zone, so travel pays one zone's weight in all.
    assert terms[:, TERM["travel"]].sum() == pytest.approx(cfg.shaping_distance_coef * 1.0)
    assert terms[1:, TERM["travel"]].sum() == 0.0
    # Each round trip costs (gamma - 1) * Phi: going back and forth is a net loss, never a gain.
    assert terms[:, TERM["potential"]].sum() < 0


def test_the_potential_terms_of_an_ended_episode_telescope_to_zero() -> None:
    gamma = 0.95
    cfg = Config(reward_mode="shaped", discounting=gamma)
    rng = np.random.default_rng(0)
    xs, damage = rng.uniform(0, 900, 40), range(0, 400, 10)
    path = [state()] + [state(x=x, damage_taken=d) for x, d in zip(xs, damage, strict=True)]
    terms = play(RewardShaper(NAMES, cfg, num_envs=1), path, end="terminal")
    discounted = (gamma ** np.arange(len(terms))) * terms[:, TERM["potential"]]
    # sum_t gamma^t (gamma Phi(s_{t+1}) - Phi(s_t)) = gamma^n Phi(terminal) - Phi(s_0) = 0 - 0.
    assert abs(discounted.sum()) < 1e-9
    assert np.abs(terms[:, TERM["potential"]]).max() > 1  # ... though single steps are far from zero


def test_a_time_out_keeps_the_potential_and_pays_no_terminal_term() -> None:
    cfg = Config(reward_mode="shaped", discounting=0.9, shaping_terminal_coef=0.1)
    path = [state(), state(x=300)]
    cut = play(RewardShaper(NAMES, cfg, num_envs=1), path, scenario=[-100.0], end="truncated")
    ended = play(RewardShaper(NAMES, cfg, num_envs=1), path, scenario=[-100.0], end="terminal")
    assert cut[0, TERM["potential"]] == pytest.approx(0.9 * 3.0)  # gamma Phi(s') with Phi(s') = 300 / 100
    assert ended[0, TERM["potential"]] == pytest.approx(0.0)  # Phi(terminal) = 0, Phi(start) = 0
    assert cut[0, TERM["terminal"]] == 0.0
    assert ended[0, TERM["terminal"]] == pytest.approx(-10.0)  # the scenario's -100 for dying, weighted 0.1


def test_envs_are_tracked_apart_and_a_new_episode_starts_from_its_own_first_state() -> None:
    cfg = Config(reward_mode="shaped", shaping_alpha=0.0)
    shaper = RewardShaper(NAMES, cfg, num_envs=2)
    shaper.reset(np.arange(2), np.array([state(kills=3), state(x=500)], np.float32))
    # Env 0 ends an episode with a kill; its next episode's first state has counters back at zero.
    got = shaper.step(
        np.array([0]),
        np.array([state()], np.float32),
        np.zeros(1),
        np.array([True]),
        np.array([False]),
        np.array([state(kills=4)], np.float32),
    )
    assert got[0] == pytest.approx(1.0)  # the kill, measured against the ended episode's own last vars
    got = shaper.step(
        np.arange(2),
        np.array([state(x=100, kills=0), state(x=500, hits=1)], np.float32),
        np.zeros(2),
        np.zeros(2, bool),
        np.zeros(2, bool),
        np.zeros((2, len(NAMES)), np.float32),
    )
    # Env 0: one zone of new ground from its new start (no kill: the counter restarted); env 1: one hit.
    np.testing.assert_allclose(got, [0.5, 10.0], rtol=1e-6)


def test_scale_and_clipping_are_applied_once_to_the_sum_and_terms_are_reported_per_episode() -> None:
    cfg = Config(reward_mode="scenario", reward_scale=0.01, reward_clipping="abs_one")
    shaper = RewardShaper(["HEALTH"], cfg, num_envs=2)
    shaper.reset(np.arange(2), np.zeros((2, 1), np.float32))
    none = np.zeros(2, bool)
    got = shaper.step(
        np.arange(2), np.zeros((2, 1), np.float32), np.array([50.0, -300.0]), none, none, np.zeros((2, 1))
    )
    np.testing.assert_allclose(got, [0.5, -1.0])
    assert shaper.term_stats() == {"reward/scenario": None}
    shaper.step(
        np.arange(2), np.zeros((2, 1), np.float32), np.array([10.0, 0.0]), np.ones(2, bool), none, np.zeros((2, 1))
    )
    assert shaper.term_stats() == {"reward/scenario": pytest.approx((60.0 - 300.0) / 2)}


def test_shaping_without_the_needed_variables_fails_with_the_fix() -> None:
    with pytest.raises(ValueError, match="--reward-mode=scenario"):
        RewardShaper(["HEALTH"], Config(reward_mode="shaped"), num_envs=1)


def test_the_health_potential_pays_a_medkit_charges_a_hit_and_telescopes_away() -> None:
    gamma, w = 0.9, 0.5
    cfg = Config(reward_mode="scenario", health_potential_coef=w, discounting=gamma)
    shaper = RewardShaper(NAMES, cfg, num_envs=1)
    assert shaper.terms == ("scenario", "health")
    healths = [100.0, 125.0, 110.0, 40.0]  # a medkit, a hit, then death (H(terminal) = 0)
    terms = play(shaper, [state(health=h) for h in healths], scenario=[1.0, 1.0, -100.0], end="terminal")
    assert terms[:, 0].tolist() == [1.0, 1.0, -100.0]  # the scenario's reward is kept as it is
    expected = [w * (gamma * 125 - 100), w * (gamma * 110 - 125), w * (gamma * 0 - 110)]
    assert terms[:, 1] == pytest.approx(expected)
    assert terms[0, 1] > 0 > terms[1, 1]
    # Discounted, an episode's health terms sum to -w * H(s_0), whatever happened in it.
    assert sum(gamma**t * v for t, v in enumerate(terms[:, 1])) == pytest.approx(-w * healths[0])
    # At a time-out the episode is cut, not ended: H(s') is kept.
    cut = play(shaper, [state(health=h) for h in healths[:2]], end="truncated")
    assert cut[0, 1] == pytest.approx(w * (gamma * 125 - 100))


def test_the_health_gain_reward_pays_each_rise_of_health_the_same_and_nothing_else() -> None:
    cfg = Config(reward_mode="scenario", health_potential_coef=0.5, health_gain_reward=100.0)
    shaper = RewardShaper(NAMES, cfg, num_envs=1)
    assert shaper.terms == ("scenario", "health", "health_gain")
    healths = [30.0, 55.0, 55.0, 40.0, 41.0, 100.0]  # a medkit, nothing, poison, a point, a medkit on the last step
    terms = play(shaper, [state(health=h) for h in healths], scenario=[4.0] * 5, end="truncated")
    assert terms[:, 2].tolist() == [100.0, 0.0, 0.0, 100.0, 100.0]  # a rise pays c, however large; a loss pays 0
    assert terms[:, 0].tolist() == [4.0] * 5


def test_the_health_terms_are_off_by_default_and_need_the_health_variable() -> None:
    assert RewardShaper(NAMES, Config(), num_envs=1).terms == ("scenario",)
    for flag, cfg in (
        ("--health-potential-coef", Config(health_potential_coef=1.0)),
        ("--health-gain-reward", Config(health_gain_reward=1.0)),
    ):
        with pytest.raises(ValueError, match=f"{flag} needs the HEALTH"):
            RewardShaper(list(REQUIRED_VARS), cfg, num_envs=1)
