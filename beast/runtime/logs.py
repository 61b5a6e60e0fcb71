"""A run's logs in SAVEDIR/XPID: `config.json`, `logs.csv` and TensorBoard event files (global step = frames).

The CSV's columns are `time`, the counters, then every learner diagnostic (`STAT_KEYS + PER_LOSS_KEYS`, so the
per-loss gradient norms measured every K steps have their column from the first row, blank in between), then any
other statistic in the order it first appears. A statistic that appears later than the header was written (a new
key from the caller) makes the logger rewrite the file once with the wider header, so every row always lines up
with the header and pandas/`csv.DictReader` read the file as is.

Resuming appends to the same CSV and adds event files to the same folder. Rows and events logged after the
checkpoint being resumed from describe training that was thrown away; `purge_from=frames` drops them from the CSV
and hides them in TensorBoard (`SummaryWriter(purge_step=...)`), so the curves do not fold back on themselves.
"""

from __future__ import annotations

import csv
import json
import math
import numbers
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from torch.utils.tensorboard import SummaryWriter

from beast.config import CONFIG_NAME, Config
from beast.learn import PER_LOSS_KEYS, STAT_KEYS

CSV_NAME = "logs.csv"
STEP_KEY = "frames"


class RunLogger:
    """Writes config.json at once, then one CSV row and one set of TensorBoard scalars per `log` call."""

    def __init__(self, run_dir: Path, cfg: Config, *, purge_from: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_config(self.run_dir / CONFIG_NAME, cfg)
        self.csv_path = self.run_dir / CSV_NAME
        self._columns: list[str] = []
        self._rows = 0
        self._lock = threading.Lock()
        if self.csv_path.exists():
            self._columns = self._load_existing(purge_from)
        self._file: TextIO | None = None
        self._csv: csv.DictWriter[str] | None = None
        if self._columns:
            self._open_append()
        self._tb = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge_from, flush_secs=10)

    # --- public ----------------------------------------------------------------------------------------------
    def log(self, counters: Mapping[str, int | float], stats: Mapping[str, Any]) -> None:
        """One row: counters (frames, steps, ...) and statistics (losses, diagnostics, throughput, episodes).
        None values are left blank in the CSV and skipped in TensorBoard."""
        row: dict[str, Any] = {"time": round(time.time(), 3), **counters}
        row.update({k: v for k, v in stats.items() if k not in counters})
        with self._lock:
            if not self._columns:
                self._columns = _initial_columns(counters, stats)
                self._start_csv()
            new = [key for key in row if key not in self._columns]
            if new:
                self._widen(new)
            assert self._csv is not None and self._file is not None
            self._csv.writerow({key: _cell(row.get(key)) for key in self._columns})
            self._file.flush()
            self._rows += 1
            step = int(counters.get(STEP_KEY, self._rows))
            for key, value in counters.items():
                if key != STEP_KEY and _is_number(value):
                    self._tb.add_scalar(f"counters/{key}", float(value), step)
            for key, value in stats.items():
                if _is_number(value):
                    self._tb.add_scalar(key, float(value), step)

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()
            self._tb.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
                self._csv = None
            self._tb.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- CSV plumbing ----------------------------------------------------------------------------------------
    def _load_existing(self, purge_from: int | None) -> list[str]:
        with open(self.csv_path, newline="") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
        if purge_from is not None and STEP_KEY in columns:
            kept = [r for r in rows if not _number(r.get(STEP_KEY)) >= purge_from]
            if len(kept) != len(rows):
                self._rewrite(columns, kept)
            rows = kept
        self._rows = len(rows)
        return columns

    def _start_csv(self) -> None:
        self._rewrite(self._columns, [])
        self._open_append()

    def _open_append(self) -> None:
        self._file = open(self.csv_path, "a", newline="")  # noqa: SIM115 (kept open for the run)
        self._csv = csv.DictWriter(self._file, fieldnames=self._columns)

    def _widen(self, new: list[str]) -> None:
        """Rewrite the file with `new` columns appended; rows written so far get blanks there."""
        assert self._file is not None
        self._file.close()
        with open(self.csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        self._columns = [*self._columns, *new]
        self._rewrite(self._columns, rows)
        self._open_append()

    def _rewrite(self, columns: list[str], rows: list[dict[str, str]]) -> None:
        tmp = self.csv_path.with_name(f".{CSV_NAME}.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.csv_path)


def write_config(path: Path, cfg: Config) -> None:
    """The run's settings as JSON; `Config.from_dict(json.load(f))` gives them back."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    os.replace(tmp, path)


def _initial_columns(counters: Mapping[str, Any], stats: Mapping[str, Any]) -> list[str]:
    """time, the counters as given, the learner's diagnostics (a fixed superset), then any other statistic."""
    diagnostics = [key for key in (*STAT_KEYS, *PER_LOSS_KEYS) if key not in counters]
    others = [key for key in stats if key not in counters and key not in diagnostics]
    return ["time", *counters, *diagnostics, *others]


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real)  # python and numpy ints, floats and bools


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else -math.inf
    except ValueError:
        return -math.inf


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    return value
