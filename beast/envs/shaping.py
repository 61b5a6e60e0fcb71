"""Reward shaping from game-variable deltas, vectorised over envs.

The write-up behind this project replaced deadly_corridor's own reward (progress along x, which the agent hacked
by always running forward) with

    r_d = r(s_t, a_t, s_{t+1}) + alpha * Phi(s_{t+1})
    r   = 0.5 Δd − 3 Δht + 10 Δh + 1 Δk
    Phi = (x_{t+1} − x_t) / z + D

with d the travel distance, ht hits taken, h hits dealt, k kills, z a zone scale and D damage taken. Two choices
the write-up leaves open are made explicit here and configurable: distances (Δd and Δx) are measured in units of
z so that one "zone" of travel weighs as much as the count terms, and D enters as the per-step damage taken with
its own weight — taken literally with weight +1 it would pay the agent for being hurt, so the default penalises it.

Episode boundaries: env servers auto-reset, so on the step that ends an episode `vars` already describe the next
episode's first state. Deltas across that boundary are meaningless; the terminal transition's deltas need the
episode's final variables (`final_vars`). Without them the shaped part of that one step is zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from beast.config import Config

REQUIRED_VARS = ("POSITION_X", "POSITION_Y", "HITS_TAKEN", "HITCOUNT", "KILLCOUNT", "DAMAGE_TAKEN")


@dataclass(frozen=True)
class ShapingWeights:
    distance: float
    hits_taken: float
    hits: float
    kills: float
    alpha: float
    zone_scale: float
    damage: float

    @classmethod
    def from_config(cls, cfg: Config) -> ShapingWeights:
        return cls(
            distance=cfg.shaping_distance_coef,
            hits_taken=cfg.shaping_hits_taken_coef,
            hits=cfg.shaping_hits_coef,
            kills=cfg.shaping_kills_coef,
            alpha=cfg.shaping_alpha,
            zone_scale=cfg.shaping_zone_scale,
            damage=cfg.shaping_damage_coef,
        )


def shaped_reward(
    prev_vars: np.ndarray, next_vars: np.ndarray, columns: dict[str, int], weights: ShapingWeights
) -> np.ndarray:
    """r + alpha*Phi(s') for transitions prev -> next; vars are float32[N, G], the result float32[N]."""
    delta = next_vars.astype(np.float64) - prev_vars.astype(np.float64)

    def d(name: str) -> np.ndarray:
        return delta[:, columns[name]]

    dx, dy = d("POSITION_X"), d("POSITION_Y")
    travel = np.hypot(dx, dy) / weights.zone_scale
    r = (
        weights.distance * travel
        + weights.hits_taken * d("HITS_TAKEN")
        + weights.hits * d("HITCOUNT")
        + weights.kills * d("KILLCOUNT")
    )
    potential = dx / weights.zone_scale + weights.damage * d("DAMAGE_TAKEN")
    return (r + weights.alpha * potential).astype(np.float32)


class RewardShaper:
    """Turns each step's game variables into the training reward for N envs, remembering the previous vars."""

    def __init__(self, var_names: Sequence[str], cfg: Config, num_envs: int) -> None:
        missing = [name for name in REQUIRED_VARS if name not in var_names]
        if cfg.reward_mode == "shaped" and missing:
            raise ValueError(
                f"reward shaping needs game variables {missing}, which the env server does not send; "
                "use --reward-mode=scenario or an env server that reports them."
            )
        self.mode = cfg.reward_mode
        self.columns = {name: i for i, name in enumerate(var_names)}
        self.weights = ShapingWeights.from_config(cfg)
        self.prev_vars = np.zeros((num_envs, len(var_names)), dtype=np.float32)

    def reset(self, env_ids: np.ndarray, vars_: np.ndarray) -> None:
        """Start tracking envs whose first observation of an episode is `vars_` [len(env_ids), G]."""
        self.prev_vars[env_ids] = vars_

    def step(
        self,
        env_ids: np.ndarray,
        vars_: np.ndarray,
        scenario_reward: np.ndarray,
        done: np.ndarray,
        final_vars: np.ndarray | None = None,
    ) -> np.ndarray:
        """The reward for the step that led to `vars_` in each of `env_ids`; float32[len(env_ids)].

        `done[i]` means that step ended an episode and `vars_[i]` is already the next episode's first state;
        `final_vars[i]`, when given, holds the ended episode's last variables.
        """
        if self.mode == "scenario":
            self.prev_vars[env_ids] = vars_
            return scenario_reward.astype(np.float32)
        done = done.astype(bool)
        arrived = np.where(done[:, None], final_vars if final_vars is not None else self.prev_vars[env_ids], vars_)
        reward = shaped_reward(self.prev_vars[env_ids], arrived, self.columns, self.weights)
        self.prev_vars[env_ids] = vars_
        return reward
