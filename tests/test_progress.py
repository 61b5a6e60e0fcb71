"""The progress view: plain lines with the key figures when not on a terminal; never a crash on missing figures."""

from __future__ import annotations

import dataclasses
import io
import math
import re

import pytest
from rich.console import Console

from beast.config import Config
from beast.progress import ProgressView

FULL = {
    "frames": 1_000,
    "env_steps": 250,
    "learner_steps": 3,
    "env_fps": 4321.0,
    "inference_fps": 4000.0,
    "learner_fps": 3900.0,
    "episodes": 12,
    "mean_return": 7.25,
    "mean_length": 150.5,
    "mean_kills": 1.5,
    "total_loss": 1.5,
    "pg_loss": 0.25,
    "baseline_loss": 1.0,
    "entropy_loss": -0.0125,
    "policy_lag_mean": 1.75,
    "buffers_free": 3,
    "buffers_filling": 8,
    "buffers_full": 5,
    "waiting": "learner waits for rollouts",
}


def config(interval_s: float) -> Config:
    return dataclasses.replace(Config(), log_interval_s=interval_s, xpid="exp", scenario="basic")


def test_plain_lines_carry_the_key_figures() -> None:
    out = io.StringIO()
    with ProgressView(config(0.001), total_frames=10_000, file=out) as view:
        assert not view.live
        view.update(FULL)
    line = out.getvalue().splitlines()[0]
    for text in (
        "frames 1,000/10,000 (10.0%)",
        "steps 250 learner 3",
        "fps env 4,321 inf 4,000 learn 3,900",
        "episodes 12 return 7.25 length 150.5 kills 1.50",
        "loss total 1.5 pg 0.25 baseline 1 entropy -0.0125",
        "lag 1.75",
        "buffers free 3 filling 8 full 5",
        "learner waits for rollouts",
    ):
        assert text in line, (text, line)


@pytest.mark.parametrize(
    "snapshot",
    [
        {},
        {key: None for key in FULL},
        {"frames": math.nan, "mean_return": math.inf, "total_loss": None, "episodes": "many", "buffers_free": -1},
        {"frames": 10, "total_loss": "x", "pg_loss": None, "waiting": None},
    ],
)
def test_missing_none_or_odd_values_print_dashes_and_never_raise(snapshot: dict[str, object]) -> None:
    out = io.StringIO()
    with ProgressView(config(0.001), total_frames=10_000, file=out) as view:
        view.update(snapshot)
    line = out.getvalue().splitlines()[0]
    assert "return -" in line and "ETA -" in line


def test_lines_come_at_most_once_per_interval_and_once_more_at_the_end() -> None:
    out = io.StringIO()
    with ProgressView(config(3600.0), total_frames=10_000, file=out) as view:
        for frames in (100, 200, 300):
            view.update({**FULL, "frames": frames})
        assert len(out.getvalue().splitlines()) == 1
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "frames 100/" in lines[0] and "frames 300/" in lines[1]


def test_eta_follows_the_frame_rate_since_the_first_update(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("beast.progress.time.monotonic", lambda: clock[0])
    with ProgressView(config(3600.0), total_frames=10_000, file=io.StringIO()) as view:
        view.update({"frames": 5_000})  # a resumed run: the rate counts from here, not from 0
        assert view.eta_s() is None
        clock[0] += 2.0
        view.update({"frames": 6_000})
        assert view.eta_s() == pytest.approx(8.0)  # 500 frames/s, 4000 frames to go
        assert "ETA 0m08s" in view.line()


def test_the_live_table_renders_full_and_empty_snapshots_on_a_terminal() -> None:
    out = io.StringIO()
    view = ProgressView(config(5.0), total_frames=10_000, file=out)
    view.console = Console(file=out, force_terminal=True, width=160)
    view.live = True
    with view:
        view.update({})
        view.update(FULL)
    text = out.getvalue()
    for label in ("frames/s", "last 100 episodes", "policy lag", "buffers", "learner waits for rollouts"):
        assert label in text


@pytest.mark.parametrize("width", [80, 200])
def test_every_row_of_the_live_view_shows_on_a_terminal_of_any_width(width: int) -> None:
    out = io.StringIO()
    view = ProgressView(config(5.0), total_frames=10_000, file=out)
    console = Console(file=out, force_terminal=True, width=width)
    view.update(FULL)
    console.print(view._render())
    lines = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue()).splitlines()
    for label in ("progress", "frames/s", "last 100 episodes", "losses", "policy lag", "buffers", "waiting"):
        assert any(line.startswith(label + " ") for line in lines), f"no {label!r} row in:\n" + "\n".join(lines)
    assert any("elapsed" in line for line in lines) and any("━" in line for line in lines)
