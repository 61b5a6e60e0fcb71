"""Several scenarios in one run: the task list, each task's settings, and the communal action space.

`--scenario basic,defend_the_center,...` names the tasks of a multi-task run (IMPALA's DMLab-30 agent, Espeholt et
al. 2018, section 5.3): one agent, one set of parameters, every task's envs acting and learning at once. A single
name is the ordinary single-task run, and nothing here changes it.

Each task keeps the game and the reward its own spec gives it (`scenarios.SCENARIO_SPECS`: frame skip, skill, reward
mode, scale and health potential, `TASK_FIELDS`), so every task plays exactly the game its single-task expert played
and its random reference was measured on. A flag that sets one of those fields to a value other than `Config`'s
default sets it for every task. The run itself (batch, unroll, learning rate, evaluations) takes the tasks' common
spec value where they agree and `Config`'s default where they do not; its frame budget is the sum of the tasks'
budgets, as many frames as one expert per task would train on. The curriculum follows one scenario's evaluations and
is single-task only.

The communal action space is deadly_corridor's seven buttons, of which every built-in scenario's are a subset:
the policy has seven logits in every task. A task whose scenario has fewer buttons has the others *masked* (their
logits set to `MASKED_LOGIT`, so they are never sampled and the exploration loss spreads over its own buttons),
rather than enabled: enabling them would change the game (basic with turning and walking is not the scenario its
expert and its random reference were measured on), and a masked task is exactly its single-task game. A scenario
with a button outside the seven is refused, naming the button.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from beast.config import Config, ConfigError
from beast.envs.scenarios import ScenarioError, resolve_scenario, scenario_spec

COMMUNAL_BUTTONS = (
    "MOVE_LEFT",
    "MOVE_RIGHT",
    "ATTACK",
    "MOVE_FORWARD",
    "MOVE_BACKWARD",
    "TURN_LEFT",
    "TURN_RIGHT",
)
# The settings of the game and of its reward: each task of a multi-task run keeps its own spec's values.
TASK_FIELDS = ("frame_skip", "doom_skill", "reward_mode", "reward_scale", "health_potential_coef", "health_gain_reward")
# Spec entries a multi-task run does not take from its tasks (module docstring).
SINGLE_TASK_FIELDS = ("curriculum_threshold",)
MASKED_LOGIT = -1e9  # a masked action's logit: exp() of it is 0 in float32, and it stays finite (no NaN in p log p)


def task_names(scenario: str) -> list[str]:
    """The tasks `--scenario` names: one, or several separated by commas."""
    return [name.strip() for name in scenario.split(",") if name.strip()]


def task_label(name: str) -> str:
    """A task's name in statistics and file names: the scenario's name, a .cfg path's stem."""
    return Path(name).stem if name.endswith(".cfg") or "/" in name else name


def is_multitask(cfg: Config) -> bool:
    return len(task_names(cfg.scenario)) > 1


def _defaults() -> dict[str, object]:
    return {f.name: f.default for f in dataclasses.fields(Config)}


def run_spec(scenario: str) -> dict[str, object]:
    """The spec overrides of a run on `scenario`: the scenario's entry for one task; for several, the fields their
    entries agree on, none of `TASK_FIELDS` or `SINGLE_TASK_FIELDS`, and the sum of their budgets."""
    names = task_names(scenario)
    if len(names) == 1:
        return scenario_spec(names[0])
    defaults = _defaults()
    specs = [scenario_spec(name) for name in names]
    keys = {key for spec in specs for key in spec} - set(TASK_FIELDS) - set(SINGLE_TASK_FIELDS) - {"total_frames"}
    merged: dict[str, object] = {}
    for key in sorted(keys):
        values = {repr(spec.get(key, defaults[key])) for spec in specs}
        if len(values) == 1:
            merged[key] = specs[0].get(key, defaults[key])
    merged["total_frames"] = sum(int(spec.get("total_frames", defaults["total_frames"])) for spec in specs)  # type: ignore[call-overload]
    return merged


def task_config(cfg: Config, task: int) -> Config:
    """Task `task`'s settings: the run's config with its scenario and, in a multi-task run, its spec's game and
    reward fields where the run's value is `Config`'s default (module docstring). A single-task run's own."""
    names = task_names(cfg.scenario)
    if len(names) == 1:
        return cfg
    defaults = _defaults()
    spec = scenario_spec(names[task])
    own: dict[str, Any] = {key: spec[key] for key in TASK_FIELDS if key in spec and getattr(cfg, key) == defaults[key]}
    return dataclasses.replace(cfg, scenario=names[task], curriculum_threshold=0.0, **own)


def task_configs(cfg: Config) -> list[Config]:
    return [task_config(cfg, t) for t in range(len(task_names(cfg.scenario)))]


def check_tasks(cfg: Config) -> None:
    """ConfigError for a task list no run can use (the single-task checks are `Config.validate`'s)."""
    names = task_names(cfg.scenario)
    if not names:
        raise ConfigError("--scenario is empty; name a scenario (basic) or several (basic,defend_the_center).")
    if len(names) == 1:
        return
    if cfg.mode in ("bench", "serve"):
        raise ConfigError(
            f"--mode={cfg.mode} plays one scenario; --scenario {cfg.scenario!r} names {len(names)}: give one of them."
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"--scenario {cfg.scenario!r} names a task twice; list each scenario once.")
    if cfg.curriculum_threshold > 0:
        raise ConfigError(
            "--curriculum-threshold follows one scenario's evaluations: a multi-task run cannot use it; "
            "set it to 0 or train the scenario alone."
        )
    for name in names:
        try:
            resolve_scenario(name)
        except ScenarioError as err:
            raise ConfigError(f"--scenario: {err}") from err


def task_of_scenario(names: Sequence[str], scenario_path: str) -> int | None:
    """Which task a server plays, from the .cfg path in its INFO (a remote host's path differs from ours: the file
    name decides)."""
    wanted = Path(scenario_path).name
    for t, name in enumerate(names):
        if resolve_scenario(name).name == wanted:
            return t
    return None


@dataclass(frozen=True)
class ActionSpace:
    """The policy's actions and, per task, the native button index of each (`native[task, action]`, -1 where the
    task lacks that button) and whether it may be taken (`available[task, action]`)."""

    names: tuple[str, ...]
    native: np.ndarray  # int32 [K, A]
    available: np.ndarray  # bool [K, A]

    @property
    def num_actions(self) -> int:
        return len(self.names)

    @classmethod
    def for_tasks(cls, task_buttons: Sequence[Sequence[str]], scenarios: Sequence[str]) -> ActionSpace:
        """One task: its own buttons, as they are. Several: the communal buttons, each task's mapped onto them;
        ScenarioError naming any button outside them."""
        if len(task_buttons) == 1:
            names = tuple(task_buttons[0])
            identity = np.arange(len(names), dtype=np.int32)[None]
            return cls(names, identity, np.ones((1, len(names)), dtype=bool))
        native = np.full((len(task_buttons), len(COMMUNAL_BUTTONS)), -1, dtype=np.int32)
        for t, (buttons, scenario) in enumerate(zip(task_buttons, scenarios, strict=True)):
            outside = [b for b in buttons if b not in COMMUNAL_BUTTONS]
            if outside:
                raise ScenarioError(
                    f"scenario {scenario!r} uses buttons {', '.join(outside)}, outside the communal action space "
                    f"({', '.join(COMMUNAL_BUTTONS)}) every task of a multi-task run shares; train it alone."
                )
            for i, button in enumerate(buttons):
                native[t, COMMUNAL_BUTTONS.index(button)] = i
        return cls(COMMUNAL_BUTTONS, native, native >= 0)

    def to_native(self, task: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """The button index each env's server expects for the policy's `actions` [n] of envs of tasks `task` [n]."""
        return self.native[task, actions]


# The suite score's two points per task: (uniform random, reference) test returns of the scenario's own reward on
# its spec over 20 episodes (docs/multitask.md). Random: `run.py --mode=test --scenario NAME --eval-policy random
# --episodes 20`. Reference: the single-task expert trained on the spec (`--mode=train --scenario NAME`), its
# better test policy of greedy and sampled (docs/training.md: the four short ones from "One agent, four
# scenarios", the others from their own sections; deadly_corridor greedy at skill 5 over 30 episodes).
TASK_REFERENCES: dict[str, tuple[float, float]] = {
    "basic": (-218.75, 80.2),
    "rocket_basic": (-198.7, 63.6),
    "defend_the_center": (0.35, 13.5),
    "defend_the_line": (8.0, 17.0),
    "health_gathering": (433.0, 2100.0),
    "take_cover": (279.0, 513.0),
    "deadly_corridor": (-92.0, 2224.0),
}


def task_score(name: str, mean_return: float | None) -> float | None:
    """(return - random) / (reference - random): 0 plays like random, 1 like the expert; None without a return or
    without the task's reference points (a .cfg of one's own, a scenario not in `TASK_REFERENCES`)."""
    if mean_return is None or name not in TASK_REFERENCES:
        return None
    random, reference = TASK_REFERENCES[name]
    return (mean_return - random) / (reference - random)


def suite_score(returns: dict[str, float | None]) -> float | None:
    """The mean of the tasks' scores, IMPALA's "mean normalised score" over a suite; None unless every task has one
    (a mean over the tasks that happen to have finished an episode would move with which ones had)."""
    scores = [task_score(name, value) for name, value in returns.items()]
    if not scores or any(s is None for s in scores):
        return None
    return sum(scores) / len(scores)  # type: ignore[arg-type]
