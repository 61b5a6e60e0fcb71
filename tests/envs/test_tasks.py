"""The task list of a multi-task run: each task's settings from its own spec, the run's from what the specs share,
the communal action space and the suite score."""

from __future__ import annotations

import pytest

from beast.cli import parse_config
from beast.config import Config
from beast.envs.scenarios import SCENARIO_SPECS, ScenarioError
from beast.envs.tasks import (
    COMMUNAL_BUTTONS,
    TASK_REFERENCES,
    ActionSpace,
    suite_score,
    task_config,
    task_configs,
    task_label,
    task_names,
    task_of_scenario,
)
from beast.learn.optim import frames_per_learner_step


def test_one_scenario_is_a_single_task_run_with_its_own_spec() -> None:
    cfg = parse_config(["--scenario", "basic", "--frame-skip", "4"])
    assert task_names(cfg.scenario) == ["basic"]
    assert task_config(cfg, 0) is cfg  # the flag (at Config's default value) beats the spec: nothing re-applied
    assert cfg.frame_skip == 4 and cfg.reward_scale == SCENARIO_SPECS["basic"]["reward_scale"]


def test_each_task_keeps_its_own_game_and_reward_and_the_run_takes_what_the_specs_share() -> None:
    cfg = parse_config(["--scenario", "basic,defend_the_center"])
    basic, center = task_configs(cfg)
    assert (basic.scenario, basic.frame_skip, basic.reward_scale) == ("basic", 8, 0.01)
    assert (center.scenario, center.frame_skip, center.reward_scale) == ("defend_the_center", 4, 1.0)
    # Both specs use the small batches: the run does too, and its budget is both experts' together.
    assert (cfg.unroll_length, cfg.batch_size, cfg.learning_rate) == (16, 8, 1e-3)
    assert (
        cfg.total_frames
        == SCENARIO_SPECS["basic"]["total_frames"] + SCENARIO_SPECS["defend_the_center"]["total_frames"]
    )
    # The schedule's frames per step: T x B x the tasks' mean frame skip (equal shares of the envs).
    assert frames_per_learner_step(cfg) == 16 * 8 * 6


def test_where_the_specs_disagree_the_run_takes_the_default_and_a_flag_sets_every_task() -> None:
    cfg = parse_config(["--scenario", "deadly_corridor,basic", "--reward-scale", "0.5"])
    defaults = Config()
    assert (cfg.unroll_length, cfg.batch_size, cfg.curriculum_threshold) == (
        defaults.unroll_length,
        defaults.batch_size,
        0.0,
    )
    corridor, basic = task_configs(cfg)
    assert corridor.reward_mode == "shaped" and basic.reward_mode == "scenario"
    assert corridor.reward_scale == basic.reward_scale == 0.5
    assert corridor.curriculum_threshold == 0.0


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--scenario", "basic,basic"], "twice"),
        (["--scenario", "basic,no_such_scenario"], "no_such_scenario"),
        (["--scenario", "basic,defend_the_center", "--curriculum-threshold", "0.5"], "curriculum"),
        (["--mode", "serve", "--scenario", "basic,defend_the_center"], "one scenario"),
    ],
)
def test_a_task_list_no_run_can_use_exits_2_naming_the_problem(argv, words, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_config(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err


def test_the_communal_space_maps_each_task_onto_its_own_buttons() -> None:
    space = ActionSpace.for_tasks(
        [["MOVE_LEFT", "MOVE_RIGHT", "ATTACK"], ["ATTACK", "TURN_LEFT", "TURN_RIGHT"]], ["basic", "center"]
    )
    assert space.names == COMMUNAL_BUTTONS and not space.available.all()
    left, attack, turn_right = (COMMUNAL_BUTTONS.index(b) for b in ("MOVE_LEFT", "ATTACK", "TURN_RIGHT"))
    assert space.available[0].tolist() == [True, True, True, False, False, False, False]
    assert space.to_native([0, 0, 1, 1], [left, attack, attack, turn_right]).tolist() == [0, 2, 0, 2]
    assert (space.native[~space.available] == -1).all()


def test_one_task_keeps_its_native_buttons() -> None:
    space = ActionSpace.for_tasks([["ATTACK", "TURN_LEFT"]], ["x"])
    assert space.names == ("ATTACK", "TURN_LEFT") and space.available.all()
    assert space.native.tolist() == [[0, 1]]


def test_a_button_outside_the_communal_space_is_refused_by_name() -> None:
    with pytest.raises(ScenarioError, match="SPEED"):
        ActionSpace.for_tasks([["ATTACK"], ["ATTACK", "SPEED"]], ["basic", "mine.cfg"])


def test_a_server_is_given_the_task_its_scenario_file_names() -> None:
    names = ["basic", "defend_the_center"]
    assert task_of_scenario(names, "/elsewhere/scenarios/defend_the_center.cfg") == 1
    assert task_of_scenario(names, "/x/deadly_corridor.cfg") is None
    assert task_label("some/dir/mine.cfg") == "mine"


def test_the_suite_score_is_the_mean_normalised_return_and_needs_every_task() -> None:
    (r0, e0), (r1, e1) = TASK_REFERENCES["basic"], TASK_REFERENCES["defend_the_center"]
    assert suite_score({"basic": e0, "defend_the_center": r1}) == pytest.approx(0.5)
    assert suite_score({"basic": r0 + (e0 - r0) / 4, "defend_the_center": e1}) == pytest.approx(0.625)
    assert suite_score({"basic": e0, "defend_the_center": None}) is None
    assert suite_score({"basic": e0, "mine.cfg": 3.0}) is None
