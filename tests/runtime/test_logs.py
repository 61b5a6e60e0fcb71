"""Run logs: config.json, a CSV whose columns can grow, TensorBoard scalars at frames, appending on resume."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from beast.config import Config
from beast.learn import PER_LOSS_KEYS, STAT_KEYS
from beast.runtime.logs import CONFIG_NAME, CSV_NAME, RunLogger


@pytest.fixture
def cfg() -> Config:
    return dataclasses.replace(Config(), xpid="exp", d_model=64, scenario="basic")


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def stats(loss: float, **extra: float | None) -> dict[str, float | None]:
    values: dict[str, float | None] = {key: 0.5 for key in STAT_KEYS}
    values["total_loss"] = loss
    values.update(extra)
    return values


def test_config_json_holds_the_run_config(tmp_path: Path, cfg: Config) -> None:
    with RunLogger(tmp_path, cfg):
        pass
    doc = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert doc == cfg.to_dict()
    assert Config.from_dict(doc) == cfg


def test_csv_rows_line_up_with_a_header_that_grows_when_new_statistics_appear(tmp_path: Path, cfg: Config) -> None:
    with RunLogger(tmp_path, cfg) as logger:
        logger.log({"frames": 100, "steps": 25}, stats(1.5))
        # the per-loss gradient norms arrive only every K steps: their columns exist from the start
        logger.log({"frames": 200, "steps": 50}, stats(1.25, **{key: 0.1 for key in PER_LOSS_KEYS}))
        # a statistic nobody announced: the header is rewritten with it, earlier rows get a blank there
        logger.log({"frames": 300, "steps": 75}, stats(1.0, env_fps=1234.5, mean_kills=None))
    header, rows = read_csv(tmp_path / CSV_NAME)
    assert header[:3] == ["time", "frames", "steps"]
    assert set(STAT_KEYS) | set(PER_LOSS_KEYS) <= set(header)
    assert header[-2:] == ["env_fps", "mean_kills"]
    assert [r["frames"] for r in rows] == ["100", "200", "300"]
    assert [float(r["total_loss"]) for r in rows] == [1.5, 1.25, 1.0]
    assert [r["grad_norm_loss/pg"] for r in rows] == ["", "0.1", ""]
    assert [r["env_fps"] for r in rows] == ["", "", "1234.5"]
    assert rows[2]["mean_kills"] == ""  # None is a blank, not "None"
    with open(tmp_path / CSV_NAME) as f:
        assert all(line.count(",") == len(header) - 1 for line in f)


def test_tensorboard_holds_every_statistic_at_the_frame_count(tmp_path: Path, cfg: Config) -> None:
    with RunLogger(tmp_path, cfg) as logger:
        logger.log({"frames": 100, "steps": 25}, stats(1.5, env_fps=10.0, mean_return=None))
        logger.log({"frames": 200, "steps": 50}, stats(0.75, **{key: 0.25 for key in PER_LOSS_KEYS}))
    found = scalars(tmp_path)
    assert set(STAT_KEYS) | set(PER_LOSS_KEYS) <= set(found)
    assert found["total_loss"] == [(100, 1.5), (200, 0.75)]
    assert found["grad_norm_loss/entropy"] == [(200, 0.25)]
    assert found["env_fps"] == [(100, 10.0)]
    assert found["counters/steps"] == [(100, 25.0), (200, 50.0)]
    assert "mean_return" not in found  # None is skipped, not logged as 0 or NaN


def test_resuming_appends_to_the_csv_and_event_files_and_drops_what_came_after_the_checkpoint(
    tmp_path: Path, cfg: Config
) -> None:
    with RunLogger(tmp_path, cfg) as logger:
        for frames in (100, 200, 300):
            logger.log({"frames": frames, "steps": frames // 4}, stats(frames / 100))
    events_before = sorted(tmp_path.glob("events.out.tfevents.*"))
    # the checkpoint was written at 200 frames: the row at 300 describes training that is thrown away
    resumed = dataclasses.replace(cfg, resume=True)
    with RunLogger(tmp_path, resumed, purge_from=201) as logger:
        logger.log({"frames": 300, "steps": 75}, stats(30.0, new_stat=7.0))
    header, rows = read_csv(tmp_path / CSV_NAME)
    assert [r["frames"] for r in rows] == ["100", "200", "300"]
    assert [float(r["total_loss"]) for r in rows] == [1.0, 2.0, 30.0]
    assert header[-1] == "new_stat" and [r["new_stat"] for r in rows] == ["", "", "7.0"]
    assert set(events_before) < set(tmp_path.glob("events.out.tfevents.*"))  # the old event file is kept
    assert scalars(tmp_path)["total_loss"] == [(100, 1.0), (200, 2.0), (300, 30.0)]
    assert json.loads((tmp_path / CONFIG_NAME).read_text())["resume"] is True
