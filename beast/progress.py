"""What a person watching a training run sees: a `rich` live table on a terminal, plain log lines otherwise.

The trainer calls `update(snapshot)` as often as it likes; the live view redraws a few times a second, and the plain
mode prints at most one line every `--log-interval-s` (and a last one on exit), so a log file piped from a long run
stays readable. Early in training most figures do not exist yet (no finished episode, no learner step): every
value may be missing or None and is shown as "-"; `update` never raises on a snapshot's contents.

A snapshot is the trainer's last row of the logs (`Trainer.stats`) with the counters of the moment: one source for
what the logs store and what a person watching sees. Keys read (all optional): frames, env_steps, learner_steps,
env_fps, inference_fps, learner_fps (frames/s), episodes, mean_return, mean_length, mean_kills (None where the
scenario has no kills), total_loss, pg_loss, baseline_loss, entropy_loss, policy_lag_mean, buffers_free,
buffers_filling, buffers_full, waiting (who waits on whom, e.g. "learner waits for rollouts"); in a multi-task run
<task>/mean_return and <task>/score of each task and suite_score.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from beast.config import Config
from beast.envs.tasks import task_label, task_names

MISSING = "-"
# The losses shown, in the paper's order.
LOSS_ORDER = ("total_loss", "pg_loss", "baseline_loss", "entropy_loss")


class ProgressView:
    """Context manager: `with ProgressView(cfg, total) as view: view.update(snapshot)`."""

    def __init__(self, cfg: Config, total_frames: int, *, file: TextIO | None = None) -> None:
        self.total_frames = max(1, int(total_frames))
        self.interval_s = cfg.log_interval_s
        self.title = f"beast {cfg.xpid or ''} {cfg.scenario}".replace("  ", " ")
        names = task_names(cfg.scenario)
        self.tasks = [task_label(name) for name in names] if len(names) > 1 else []
        self.console = Console(file=file)
        self.live = self.console.is_terminal
        self._live: Live | None = None
        self._snapshot: dict[str, Any] = {}
        self._started = time.monotonic()
        self._rate_origin: tuple[float, float] | None = None  # (time, frames) of the first update
        self._last_line = -math.inf
        self._unprinted = False

    # --- lifetime --------------------------------------------------------------------------------------------
    def __enter__(self) -> ProgressView:
        if self.live:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
            self._live.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.stop()
            self._live = None
        elif self._unprinted:
            self._print_line()

    # --- updates ---------------------------------------------------------------------------------------------
    def update(self, snapshot: Mapping[str, Any]) -> None:
        """Take the trainer's latest figures; redraw (terminal) or print a line if the interval has passed."""
        self._snapshot = dict(snapshot) if isinstance(snapshot, Mapping) else {}
        now = time.monotonic()
        frames = _num(self._snapshot.get("frames"))
        if self._rate_origin is None and frames is not None:
            self._rate_origin = (now, frames)  # a resumed run starts at its checkpoint's frames, not at 0
        if self._live is not None:
            self._live.update(self._render())
        elif now - self._last_line >= self.interval_s:
            self._print_line()
        else:
            self._unprinted = True

    def eta_s(self) -> float | None:
        """Seconds to `total_frames` at the average rate since the first update, or None before it is known."""
        frames = _num(self._snapshot.get("frames"))
        if self._rate_origin is None or frames is None:
            return None
        t0, f0 = self._rate_origin
        elapsed, done = time.monotonic() - t0, frames - f0
        if elapsed <= 0 or done <= 0:
            return None
        return max(0.0, (self.total_frames - frames) / (done / elapsed))

    def line(self) -> str:
        """The plain one-line summary of the latest snapshot."""
        s = self._snapshot
        parts = [
            f"frames {self._frames_text()}",
            f"steps {_fmt(s.get('env_steps'), ',')} learner {_fmt(s.get('learner_steps'), ',')}",
            f"fps env {_fmt(s.get('env_fps'), ',.0f')} inf {_fmt(s.get('inference_fps'), ',.0f')} "
            f"learn {_fmt(s.get('learner_fps'), ',.0f')}",
            f"episodes {_fmt(s.get('episodes'), ',')} return {_fmt(s.get('mean_return'), '.2f')} "
            f"length {_fmt(s.get('mean_length'), '.1f')} kills {_fmt(s.get('mean_kills'), '.2f')}",
            *([f"suite {_fmt(s.get('suite_score'), '.2f')} ({self._tasks_text()})"] if self.tasks else []),
            f"loss {self._losses_text()}",
            f"lag {_fmt(s.get('policy_lag_mean'), '.2f')}",
            f"buffers free {_fmt(s.get('buffers_free'), 'd')} filling {_fmt(s.get('buffers_filling'), 'd')} "
            f"full {_fmt(s.get('buffers_full'), 'd')}",
        ]
        waiting = s.get("waiting")
        if waiting:
            parts.append(str(waiting))
        parts.append(f"ETA {_duration(self.eta_s())}")
        return " | ".join(parts)

    # --- rendering -------------------------------------------------------------------------------------------
    def _print_line(self) -> None:
        self.console.print(self.line(), markup=False, highlight=False, soft_wrap=True)
        self._last_line = time.monotonic()
        self._unprinted = False

    def _frames_text(self) -> str:
        frames = _num(self._snapshot.get("frames"))
        pct = MISSING if frames is None else f"{100.0 * frames / self.total_frames:.1f}%"
        return f"{_fmt(frames, ',.0f')}/{self.total_frames:,} ({pct})"

    def _tasks_text(self) -> str:
        """Each task's return (last 100 episodes) and, in brackets, its score against random and its reference."""
        s = self._snapshot
        return " · ".join(
            f"{task} {_fmt(s.get(f'{task}/mean_return'), '.2f')} [{_fmt(s.get(f'{task}/score'), '.2f')}]"
            for task in self.tasks
        )

    def _losses_text(self) -> str:
        names = [n for n in LOSS_ORDER if n in self._snapshot]
        if not names:
            return MISSING
        return " ".join(f"{n.removesuffix('_loss')} {_fmt(self._snapshot[n], '.4g')}" for n in names)

    def _render(self) -> Group:
        s = self._snapshot
        frames = _num(s.get("frames")) or 0.0
        elapsed = time.monotonic() - self._started
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        rows = {
            "progress": f"frames {self._frames_text()} · env steps {_fmt(s.get('env_steps'), ',')} · learner steps "
            f"{_fmt(s.get('learner_steps'), ',')} · elapsed {_duration(elapsed)} · ETA {_duration(self.eta_s())}",
            "frames/s": f"env {_fmt(s.get('env_fps'), ',.0f')} · inference {_fmt(s.get('inference_fps'), ',.0f')} · "
            f"learner {_fmt(s.get('learner_fps'), ',.0f')}",
            "last 100 episodes": f"return {_fmt(s.get('mean_return'), '.2f')} · length "
            f"{_fmt(s.get('mean_length'), '.1f')} · kills {_fmt(s.get('mean_kills'), '.2f')} · "
            f"{_fmt(s.get('episodes'), ',')} episodes in all",
            **(
                {"tasks": f"suite score {_fmt(s.get('suite_score'), '.2f')} · {self._tasks_text()}"}
                if self.tasks
                else {}
            ),
            "losses": self._losses_text(),
            "policy lag": f"{_fmt(s.get('policy_lag_mean'), '.2f')} learner steps (mean)",
            "buffers": f"free {_fmt(s.get('buffers_free'), 'd')} · filling {_fmt(s.get('buffers_filling'), 'd')} · "
            f"full {_fmt(s.get('buffers_full'), 'd')}",
            "waiting": str(s.get("waiting") or MISSING),
        }
        # The bar is a cell of the grid, under the progress row: rich's ProgressBar ends without a line break, so
        # on its own in a Group it ran into (and, at full width, hid) the row after it.
        bar = ProgressBar(total=self.total_frames, completed=min(frames, self.total_frames))
        for name, text in rows.items():
            table.add_row(name, Text(text))
            if name == "progress":
                table.add_row("", bar)
        return Group(Text(self.title, style="bold"), table)


def _num(value: Any) -> float | None:
    """A finite number, or None for anything else (missing, None, NaN, a string)."""
    if isinstance(value, numbers.Real) and math.isfinite(float(value)):
        return float(value)
    return None


def _fmt(value: Any, spec: str) -> str:
    number = _num(value)
    if number is None:
        return MISSING
    if spec in ("d", ","):
        return format(round(number), spec)
    return format(number, spec)


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return MISSING
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
