"""The curriculum's rule: one skill up per evaluation that reaches the threshold, never past 5, off by default."""

from __future__ import annotations

import dataclasses

import pytest

from beast.config import Config, ConfigError
from beast.runtime.curriculum import MAX_SKILL, SUCCESS_KEY, Curriculum


def test_skill_rises_by_one_per_successful_evaluation_up_to_five() -> None:
    curriculum = Curriculum(Config(curriculum_threshold=0.5))
    assert curriculum.skill == 1  # --doom-skill 0 (the scenario's own) starts a curriculum at the easiest
    assert curriculum.after_evaluation({SUCCESS_KEY: 0.4}) is None
    assert curriculum.after_evaluation({SUCCESS_KEY: None}) is None
    raised = [curriculum.after_evaluation({SUCCESS_KEY: 0.5}) for _ in range(6)]
    assert raised == [2, 3, 4, 5, None, None]
    assert curriculum.skill == MAX_SKILL


def test_a_resumed_curriculum_continues_at_its_saved_skill_and_the_default_has_none() -> None:
    assert Curriculum(Config(curriculum_threshold=0.5, doom_skill=2), skill=4).skill == 4
    assert Curriculum(Config(curriculum_threshold=0.5, doom_skill=2)).skill == 2
    off = Curriculum(Config())
    assert not off.enabled and off.after_evaluation({SUCCESS_KEY: 1.0}) is None


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [({"curriculum_threshold": 1.5}, "--curriculum-threshold"), ({"curriculum_threshold": -0.1}, "--curriculum")],
)
def test_a_threshold_outside_0_1_is_refused(overrides: dict, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        dataclasses.replace(Config(), **overrides).validate()


def test_a_curriculum_without_evaluations_is_refused() -> None:
    with pytest.raises(ConfigError, match="--eval-interval-frames"):
        Config(curriculum_threshold=0.5, eval_interval_frames=0).validate()
