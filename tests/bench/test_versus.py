"""The side-by-side benchmark's readings: the steady-state rates of each system's log (its first minute left out),
a log without a rate refused, and the memory of a real process tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from beast.bench import versus


def test_sample_factory_rate_is_the_median_of_its_reports_after_the_warm_up(tmp_path: Path) -> None:
    # Its lines as it writes them into a file, colour codes included.
    lines = ["\x1b[36m[2026-12-01 09:59:58,001][00001] Heartbeat connected on Batcher_0\x1b[0m"]
    lines.append("\x1b[36m[2026-12-01 09:59:59,519][19566] Fps is (10 sec: nan, 60 sec: nan, 300 sec: nan).\x1b[0m")
    for i, fps in enumerate([50.0, 900.0, 1500.0, 1700.0, 1800.0, 1600.0]):
        at = f"2026-12-01 10:{i // 2:02d}:{(i % 2) * 30:02d},123"
        lines.append(f"\x1b[36m[{at}][19566] Fps is (10 sec: {fps}, 60 sec: 340.2, 300 sec: 340.2). Total: {i}.")
    log = tmp_path / "sf.log"
    log.write_text("\n".join(lines) + "\n")
    # Reports at 0, 30, 60, 90, 120 and 150 s: those from 60 s on count.
    assert versus.sample_factory_rate(log) == 1650.0  # the median of 1,500, 1,700, 1,800 and 1,600


def test_a_log_without_rates_is_refused_saying_where_to_look(tmp_path: Path) -> None:
    log = tmp_path / "sf.log"
    log.write_text("Traceback (most recent call last):\n")
    with pytest.raises(RuntimeError, match="read the log"):
        versus.sample_factory_rate(log)


def test_beast_rates_are_the_medians_of_the_rows_after_the_warm_up(tmp_path: Path) -> None:
    rows = ["time,frames,env_fps,learner_fps"]
    rows += [f"{1000 + 20 * i},{i},{100 * (i + 1)},{10 * (i + 1)}" for i in range(7)]  # 0, 20, ... 120 s
    path = tmp_path / "logs.csv"
    path.write_text("\n".join(rows) + "\n")
    assert versus.beast_rates(path) == {"env_fps": 550.0, "learner_fps": 55.0}  # the rows at 60, 80, 100, 120 s


def test_the_memory_of_a_process_tree_counts_its_children(tmp_path: Path) -> None:
    # A parent holding ~64 MiB that starts a child holding ~64 MiB: the tree's peak holds both, the root one.
    child = "import time; b = bytearray(64 << 20); time.sleep(30)"
    parent = (
        "import subprocess, sys, time; b = bytearray(64 << 20); "
        f"subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(30)"
    )
    memory = versus.run_for([sys.executable, "-c", parent], 4.0, tmp_path / "log")
    assert memory.peak_root_mib > 60
    assert memory.peak_tree_mib > memory.peak_root_mib + 60
    assert memory.samples and all(t >= 0 and tree >= root for t, tree, root in memory.samples)
    leftover = subprocess.run(["pgrep", "-f", "bytearray\\(64 << 20\\); time.sleep"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "run_for left a process of the tree running"
