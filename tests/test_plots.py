"""Plots of a run's logs.csv: one readable PNG per figure with data, none for a family without columns, blank
and non-numeric cells skipped per series, and a kind exit 2 when there is nothing to plot."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from beast import plots
from beast.config import Config
from beast.learn import PER_LOSS_KEYS, STAT_KEYS
from beast.runtime.logs import CSV_NAME, RunLogger

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROWS = 6
MEASURED = (0, 3)  # rows that carry the per-loss gradient norms (every K steps in training)
EVALUATED = (2, 5)  # rows that carry evaluation results
ALL_FIGURES = ("returns", "values", "policy", "gradients", "rewards", "throughput")


def frames(i: int) -> int:
    return (i + 1) * 4_000


def counters(i: int) -> dict[str, int]:
    return {"frames": frames(i), "env_steps": frames(i) // 4, "episodes": 3 * i, "learner_steps": 10 * i}


def learner_stats(i: int) -> dict[str, float | None]:
    values: dict[str, float | None] = {key: 0.5 + 0.1 * i for key in STAT_KEYS}
    values["log_pi_mean"], values["log_mu_mean"] = -1.0 - 0.1 * i, -1.1 - 0.1 * i
    if i in MEASURED:
        values.update({key: 0.2 + i for key in PER_LOSS_KEYS})
        values["grad_norm_loss/entropy"] = 0.0  # a loss that reaches no parameter: cannot be drawn on a log axis
    return values


def write_run(run_dir: Path, *, rewards: bool = True) -> None:
    """A synthetic logs.csv written by the real RunLogger: learner stats every row, per-loss norms and evaluation
    on some rows only (blank cells elsewhere), reward terms when asked, a non-numeric cell in mean_return."""
    with RunLogger(run_dir, Config()) as logger:
        for i in range(ROWS):
            stats: dict[str, object] = {
                **learner_stats(i),
                "env_fps": 1000.0 + i,
                "learner_fps": 900.0 + i,
                "mean_return": "n/a" if i == 1 else float(i),
                "mean_length": 50.0 + i,
                "success_rate": i / ROWS,
                "mean_kills": None,  # a scenario without kills: a column that stays blank
            }
            if i in EVALUATED:
                for policy in ("greedy", "sample"):
                    stats[f"eval/{policy}/mean_return"] = 2.0 * i
                    stats[f"eval/{policy}/reached_goal_rate"] = 0.5
            if rewards:
                stats["reward/kill"] = 1.0 * i
                stats["reward/living"] = -0.01
            logger.log(counters(i), stats)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, after checking its signature and that PIL decodes it into a non-blank image."""
    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 1.0, f"{path.name} is blank"
    return pixels.shape[1], pixels.shape[0]


def test_a_full_run_writes_every_figure_as_a_readable_png(tmp_path: Path) -> None:
    write_run(tmp_path)
    written = plots.plot_run(tmp_path)
    assert written == [tmp_path / "plots" / f"{name}.png" for name in ALL_FIGURES]
    sizes = {path.stem: png_size(path) for path in written}
    for name, (width, height) in sizes.items():
        assert width >= 800 and height >= 300, f"{name}.png is {width}x{height}"
    # Panels without columns are left out: throughput has one panel; values (PopArt included) and returns three.
    assert sizes["throughput"][1] < sizes["values"][1] == sizes["returns"][1]


def test_out_dir_is_where_the_figures_go(tmp_path: Path) -> None:
    write_run(tmp_path / "run")
    written = plots.plot_run(tmp_path / "run", tmp_path / "elsewhere")
    assert {path.parent for path in written} == {tmp_path / "elsewhere"}
    assert not (tmp_path / "run" / "plots").exists()


def test_a_family_without_columns_writes_no_figure(tmp_path: Path) -> None:
    write_run(tmp_path, rewards=False)
    written = plots.plot_run(tmp_path)
    assert [path.stem for path in written] == [name for name in ALL_FIGURES if name != "rewards"]
    assert not (tmp_path / "plots" / "rewards.png").exists()


def test_columns_in_the_header_but_never_filled_draw_nothing(tmp_path: Path) -> None:
    # The logger's header always holds every learner diagnostic; here only the returns ever get a value.
    with RunLogger(tmp_path, Config()) as logger:
        for i in range(3):
            logger.log(counters(i), {"mean_return": float(i)})
    assert "entropy" in (tmp_path / CSV_NAME).read_text().splitlines()[0]
    written = plots.plot_run(tmp_path)
    assert [path.name for path in written] == ["returns.png"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["returns.png"]


def test_each_series_keeps_only_its_rows_with_a_number(tmp_path: Path) -> None:
    write_run(tmp_path)
    data = plots.read_logs(tmp_path / CSV_NAME)
    assert data["grad_norm_loss/pg"] == ([frames(i) for i in MEASURED], [0.2 + i for i in MEASURED])
    assert data["eval/greedy/mean_return"][0] == [frames(i) for i in EVALUATED]
    xs, ys = data["mean_return"]  # the "n/a" cell of row 1 is skipped, the other rows kept
    assert xs == [frames(i) for i in range(ROWS) if i != 1]
    assert ys == [float(i) for i in range(ROWS) if i != 1]
    assert data["env_steps"][1] == [frames(i) // 4 for i in range(ROWS)]
    assert "mean_kills" not in data  # in the header, blank on every row
    assert "frames" not in data


def test_a_csv_without_frames_is_refused(tmp_path: Path) -> None:
    (tmp_path / CSV_NAME).write_text("time,mean_return\n1.0,2.0\n")
    with pytest.raises(plots.PlotError, match="frames"):
        plots.plot_run(tmp_path)


def test_main_prints_the_written_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path / "exp")
    cfg = dataclasses.replace(Config(), savedir=str(tmp_path), xpid="exp")
    assert plots.main(cfg) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [str(tmp_path / "exp" / "plots" / f"{name}.png") for name in ALL_FIGURES]


@pytest.mark.parametrize("xpid", ["", "exp"])
def test_main_without_logs_exits_2_saying_what_to_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], xpid: str
) -> None:
    (tmp_path / "exp").mkdir()  # the run folder exists, its logs.csv does not
    cfg = dataclasses.replace(Config(), savedir=str(tmp_path), xpid=xpid)
    with pytest.raises(SystemExit) as exit_info:
        plots.main(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--xpid" in err
    assert not (tmp_path / "exp" / "plots").exists()


def test_runs_compared_and_a_reference_by_wall_time(tmp_path: Path) -> None:
    for name, slope in (("a", 1.0), ("b", 2.0)):
        with RunLogger(tmp_path / name, Config()) as logger:
            for i in range(5):
                logger.log({"frames": 1000 * i}, {"mean_return": slope * i, "entropy": 1.9 - 0.1 * i * slope})
    compare = plots.plot_compare([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    assert compare.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    reference = tmp_path / "ref.txt"
    reference.write_text("# comment\n  0.1 min         0 frames     -76\n  1.2 min    106496 frames      63\n")
    assert plots.read_reference(reference) == ([0.1, 1.2], [-76.0, 63.0])
    wall = plots.plot_wall_time(tmp_path / "a", reference, tmp_path / "out")
    assert wall.name == "wall_time.png" and wall.stat().st_size > 1000
    reference.write_text("no curve here\n")
    with pytest.raises(plots.PlotError):
        plots.read_reference(reference)


def test_a_multi_task_run_draws_each_task_and_the_suite(tmp_path: Path) -> None:
    tasks = ("basic", "defend_the_center")
    with RunLogger(tmp_path, Config(scenario=",".join(tasks))) as logger:
        for i in range(ROWS):
            stats: dict[str, object] = {"mean_return": float(i), "suite_score": 0.1 * i}
            for k, task in enumerate(tasks):
                stats[f"{task}/mean_return"] = 10.0 * k + i
                stats[f"{task}/score"] = 0.1 * (i + k)
                stats[f"{task}/reward/scenario"] = 1.0
            logger.log(counters(i), stats)
    data = plots.read_logs(tmp_path / CSV_NAME)
    (scores, returns, _) = plots.FIGURES[1].panels
    assert plots.FIGURES[1].name == "tasks"
    assert [label for label, _ in plots._select(scores, data)] == ["basic", "defend_the_center", "suite (training)"]
    assert [label for label, _ in plots._select(returns, data)] == list(tasks)
    written = plots.plot_run(tmp_path)
    assert tmp_path / "plots" / "tasks.png" in written
    png_size(tmp_path / "plots" / "tasks.png")
