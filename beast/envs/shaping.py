"""The training reward, from the scenario's reward or from game-variable deltas, vectorised over envs.

The write-up behind this project replaced deadly_corridor's own reward (progress along x, which the agent hacked
by always running forward) with `r + alpha * Phi`, `r = 0.5 Δd − 3 Δht + 10 Δh + 1 Δk`, `Phi = Δx / z + D`. Its
terms and weights are kept; three flaws are mended so that the shaping cannot be farmed:

* travel `d` counts *new ground*: the growth of the farthest distance from the episode's start reached so far
  (in zones of z map units). Euclidean step length paid strafing back and forth without limit; new ground pays
  an oscillating policy nothing after its first swing, and a whole episode at most its farthest reach.
* the potential term is a true difference `alpha * (gamma * Phi(s') − Phi(s))` with
  `Phi(s) = (x − x_start) / z + w_D * DAMAGE_TAKEN` (Ng, Harada & Russell 1999): it speeds up credit assignment
  without changing which policy is optimal. `Phi` of a terminal state is 0, so an episode's discounted potential
  terms sum to `−Phi(s_0) = 0`; at a time-out the episode is cut, not ended, and `Phi(s')` is kept.
* the scenario's own reward on the step that *ends* an episode (deadly_corridor: +1,000 at the vest, −100 for
  dying) stays in, weighted by `shaping_terminal_coef`: what the scenario calls success still pays.

With the scenario's own reward, `--health-potential-coef w` adds one potential term, `w * (gamma * H(s') - H(s))`
of the HEALTH variable (H = 0 at a terminal state): survival scenarios pay +1 a tic alive, so a medkit or a hit
would otherwise count only through a death that comes later; as a potential it cannot change the optimal policy.
`--health-gain-reward c` adds `c` on each step whose HEALTH rose (the gathering shaping of Wu & Tian 2017, which
Sample Factory uses): not a potential, but what it pays for (a medkit) is what survival needs, and it pays the
same whatever health is left, which the model, seeing no HUD, cannot read.

The training reward is then `clip(reward_scale * sum of terms)`: the one place that scales and clips, so the
learner's targets and the reward the model reads as input are the same number. Each term is summed per episode
and reported on its own (`reward/<term>`), so a user sees what the agent is paid for.

Episode boundaries: env servers auto-reset, so on the step that ends an episode `vars` already describe the next
episode's first state; the terminal transition's deltas use the ended episode's last variables (`final_vars`).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from beast.config import Config
from beast.envs.tasks import task_label

REQUIRED_VARS = ("POSITION_X", "POSITION_Y", "HITS_TAKEN", "HITCOUNT", "KILLCOUNT", "DAMAGE_TAKEN")
SHAPED_TERMS = ("travel", "hits_taken", "hits", "kills", "potential", "terminal")
SCENARIO_TERMS = ("scenario",)
HEALTH_TERM = "health"  # with --health-potential-coef: w * (gamma * HEALTH(s') - HEALTH(s)) beside the scenario's
HEALTH_GAIN_TERM = "health_gain"  # with --health-gain-reward c: c on each step whose HEALTH rose
EPISODE_WINDOW = 100  # episodes whose per-term sums `term_stats` averages


@dataclass(frozen=True)
class ShapingWeights:
    distance: float
    hits_taken: float
    hits: float
    kills: float
    alpha: float
    zone_scale: float
    damage: float
    terminal: float
    gamma: float

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
            terminal=cfg.shaping_terminal_coef,
            gamma=cfg.discounting,
        )


def clip_reward(rewards: np.ndarray, mode: str) -> np.ndarray:
    """`abs_one` clamps to [-1, 1] (the paper's Atari/DMLab choice); `none` keeps the reward."""
    if mode == "abs_one":
        return np.clip(rewards, -1.0, 1.0)
    if mode == "none":
        return rewards
    raise ValueError(f"reward clipping {mode!r} is not one of abs_one, none.")


class RewardShaper:
    """Turns each step's results into the training reward for N envs, remembering what each episode has done."""

    def __init__(self, var_names: Sequence[str], cfg: Config, num_envs: int) -> None:
        missing = [name for name in REQUIRED_VARS if name not in var_names]
        if cfg.reward_mode == "shaped" and missing:
            raise ValueError(
                f"reward shaping needs game variables {missing}, which the env server does not send; "
                "use --reward-mode=scenario or an env server that reports them."
            )
        self.mode = cfg.reward_mode
        self.scale = cfg.reward_scale
        self.clipping = cfg.reward_clipping
        self.health_coef = cfg.health_potential_coef if self.mode == "scenario" else 0.0
        self.health_gain = cfg.health_gain_reward if self.mode == "scenario" else 0.0
        for flag, value in (("--health-potential-coef", self.health_coef), ("--health-gain-reward", self.health_gain)):
            if value and "HEALTH" not in var_names:
                raise ValueError(
                    f"{flag} needs the HEALTH game variable, which the env server does not send; "
                    "set it to 0 or use an env server that reports it."
                )
        self.terms: tuple[str, ...] = SHAPED_TERMS if self.mode == "shaped" else SCENARIO_TERMS
        if self.health_coef:
            self.terms = (*self.terms, HEALTH_TERM)
        if self.health_gain:
            self.terms = (*self.terms, HEALTH_GAIN_TERM)
        self.gamma = cfg.discounting
        self.columns = {name: i for i, name in enumerate(var_names)}
        self.weights = ShapingWeights.from_config(cfg)
        self.prev_vars = np.zeros((num_envs, len(var_names)), dtype=np.float32)
        self.start = np.zeros((num_envs, 2), dtype=np.float64)  # the episode's first (x, y)
        self.farthest = np.zeros(num_envs, dtype=np.float64)  # farthest distance from it so far, in zones
        self.episode_terms = np.zeros((num_envs, len(self.terms)), dtype=np.float64)
        self._finished: collections.deque[np.ndarray] = collections.deque(maxlen=EPISODE_WINDOW)
        self._lock = threading.Lock()  # `term_stats` is read from another thread

    def reset(self, env_ids: np.ndarray, vars_: np.ndarray) -> None:
        """Start tracking envs whose first observation of an episode is `vars_` [len(env_ids), G]."""
        self.prev_vars[env_ids] = vars_
        if self.mode == "shaped":
            self.start[env_ids] = self._position(vars_)
        self.farthest[env_ids] = 0.0
        self.episode_terms[env_ids] = 0.0

    def step(
        self,
        env_ids: np.ndarray,
        vars_: np.ndarray,
        scenario_reward: np.ndarray,
        done: np.ndarray,
        truncated: np.ndarray,
        final_vars: np.ndarray,
    ) -> np.ndarray:
        """The training reward for the step that led to `vars_` in each of `env_ids`; float32[len(env_ids)].

        `done[i]`: that step ended an episode (`truncated[i]`: by the time limit) and `vars_[i]` is already the
        next episode's first state, `final_vars[i]` the ended episode's last variables.
        """
        done = done.astype(bool)
        arrived = np.where(done[:, None], final_vars, vars_).astype(np.float64)
        terminal = done & ~truncated.astype(bool)
        if self.mode == "shaped":
            terms = self._shaped_terms(env_ids, arrived, scenario_reward, terminal)
        else:
            columns = [scenario_reward.astype(np.float64)]
            if self.health_coef:
                columns.append(self._health_term(env_ids, arrived, terminal))
            if self.health_gain:
                columns.append(self._health_gain_term(env_ids, arrived))
            terms = np.stack(columns, axis=1)
        self.episode_terms[env_ids] += terms
        self.prev_vars[env_ids] = vars_
        if done.any():
            ended = env_ids[done]
            with self._lock:
                self._finished.extend(self.episode_terms[ended].copy())
            self.reset(ended, vars_[done])
        return clip_reward(self.scale * terms.sum(axis=1), self.clipping).astype(np.float32)

    def term_stats(self) -> dict[str, float | None]:
        """Each term's mean per-episode sum over the last episodes (unscaled), as `reward/<term>`."""
        with self._lock:
            finished = np.array(self._finished) if self._finished else None
        if finished is None:
            return {f"reward/{term}": None for term in self.terms}
        return {f"reward/{term}": float(v) for term, v in zip(self.terms, finished.mean(axis=0), strict=True)}

    def _health_term(self, env_ids: np.ndarray, arrived: np.ndarray, terminal: np.ndarray) -> np.ndarray:
        """`w * (gamma * H(s') - H(s))` with H the HEALTH variable, and H = 0 at a terminal state: the terms of an
        episode sum to `-w * H(s_0)` whatever the policy did (discounted), so it cannot change the optimal policy."""
        column = self.columns["HEALTH"]
        before = self.prev_vars[env_ids, column].astype(np.float64)
        after = np.where(terminal, 0.0, arrived[:, column])
        return self.health_coef * (self.gamma * after - before)

    def _health_gain_term(self, env_ids: np.ndarray, arrived: np.ndarray) -> np.ndarray:
        """`c` where HEALTH rose on the step prev -> arrived (an ended episode's last step included), else 0."""
        column = self.columns["HEALTH"]
        rose = arrived[:, column] > self.prev_vars[env_ids, column]
        return np.where(rose, self.health_gain, 0.0)

    def _position(self, vars_: np.ndarray) -> np.ndarray:
        return vars_[:, [self.columns["POSITION_X"], self.columns["POSITION_Y"]]].astype(np.float64)

    def _potential(self, vars_: np.ndarray, env_ids: np.ndarray) -> np.ndarray:
        w = self.weights
        x = vars_[:, self.columns["POSITION_X"]].astype(np.float64)
        damage = vars_[:, self.columns["DAMAGE_TAKEN"]].astype(np.float64)
        return (x - self.start[env_ids, 0]) / w.zone_scale + w.damage * damage

    def _shaped_terms(
        self, env_ids: np.ndarray, arrived: np.ndarray, scenario_reward: np.ndarray, terminal: np.ndarray
    ) -> np.ndarray:
        """[n, len(SHAPED_TERMS)] for the transitions prev -> arrived (the ended episode's last vars where an episode
        ended); `terminal`: the episode ended by itself (not by the time limit), so Phi(s') = 0."""
        w = self.weights
        prev = self.prev_vars[env_ids].astype(np.float64)

        def delta(name: str) -> np.ndarray:
            return arrived[:, self.columns[name]] - prev[:, self.columns[name]]

        reach = np.hypot(*(self._position(arrived) - self.start[env_ids]).T) / w.zone_scale
        new_ground = np.maximum(reach - self.farthest[env_ids], 0.0)
        self.farthest[env_ids] += new_ground
        phi_next = np.where(terminal, 0.0, self._potential(arrived, env_ids))
        return np.stack(
            [
                w.distance * new_ground,
                w.hits_taken * delta("HITS_TAKEN"),
                w.hits * delta("HITCOUNT"),
                w.kills * delta("KILLCOUNT"),
                w.alpha * (w.gamma * phi_next - self._potential(prev, env_ids)),
                w.terminal * np.where(terminal, scenario_reward, 0.0),
            ],
            axis=1,
        )


class TaskRewards:
    """The training reward of a multi-task run's envs: each task's own `RewardShaper` (its reward mode, scale and
    potential, `tasks.task_config`) for the envs of that task; one task is one shaper. The interface is the
    shaper's, so the acting step does not know how many tasks there are."""

    def __init__(self, var_names: Sequence[str], task_cfgs: Sequence[Config], env_task: np.ndarray) -> None:
        self.env_task = env_task
        self.labels = [task_label(task.scenario) for task in task_cfgs]
        self.shapers = [RewardShaper(var_names, task, len(env_task)) for task in task_cfgs]

    def _split(self, env_ids: np.ndarray) -> list[tuple[RewardShaper, np.ndarray]]:
        if len(self.shapers) == 1:
            return [(self.shapers[0], np.arange(len(env_ids)))]
        tasks = self.env_task[env_ids]
        return [(shaper, np.flatnonzero(tasks == t)) for t, shaper in enumerate(self.shapers) if (tasks == t).any()]

    def reset(self, env_ids: np.ndarray, vars_: np.ndarray) -> None:
        for shaper, rows in self._split(env_ids):
            shaper.reset(env_ids[rows], vars_[rows])

    def step(
        self,
        env_ids: np.ndarray,
        vars_: np.ndarray,
        scenario_reward: np.ndarray,
        done: np.ndarray,
        truncated: np.ndarray,
        final_vars: np.ndarray,
    ) -> np.ndarray:
        """`RewardShaper.step` for each task's envs among `env_ids`, in their order."""
        parts = self._split(env_ids)
        if len(parts) == 1:
            return parts[0][0].step(env_ids, vars_, scenario_reward, done, truncated, final_vars)
        reward = np.empty(len(env_ids), dtype=np.float32)
        for shaper, rows in parts:
            reward[rows] = shaper.step(
                env_ids[rows], vars_[rows], scenario_reward[rows], done[rows], truncated[rows], final_vars[rows]
            )
        return reward

    def term_stats(self) -> dict[str, float | None]:
        """`reward/<term>` of one task; `<task>/reward/<term>` of each of several."""
        if len(self.shapers) == 1:
            return self.shapers[0].term_stats()
        return {
            f"{label}/{key}": value
            for label, shaper in zip(self.labels, self.shapers, strict=True)
            for key, value in shaper.term_stats().items()
        }
