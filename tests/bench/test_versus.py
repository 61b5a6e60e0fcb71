"""The side-by-side benchmark's readings: the steady-state rates of each system's log (its first minute left out),
a log without a rate refused, and the memory of a real process tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from beast.bench import versus


def test_sample_factory_rate_is_its_counters_growth_after_the_warm_up(tmp_path: Path) -> None:
    # Its lines as it writes them into a file, colour codes included.
    lines = ["\x1b[36m[2026-12-01 09:59:58,001][00001] Heartbeat connected on Batcher_0\x1b[0m"]
    first = "Fps is (10 sec: nan, 60 sec: nan, 300 sec: nan). Total num frames: 0. Throughput: 0: nan. Samples: 0."
    lines.append(f"\x1b[36m[2026-12-01 10:00:00,500][19566] {first}\x1b[0m")
    for i, total in enumerate([20480, 81920, 122880, 184320, 245760], start=1):  # every 30 s
        at = f"2026-12-01 10:{(30 * i) // 60:02d}:{(30 * i) % 60:02d},500"
        lines.append(f"\x1b[36m[{at}][19566] Fps is (10 sec: 2048.0, 60 sec: 1.0). Total num frames: {total}. Lag.")
    log = tmp_path / "sf.log"
    log.write_text("\n".join(lines) + "\n")
    # Reports at 0, 30, ... 150 s: from the one at 60 s (81,920) to the one at 150 s (245,760).
    assert versus.sample_factory_rate(log) == pytest.approx((245760 - 81920) / 90)


def test_a_log_without_rates_is_refused_saying_where_to_look(tmp_path: Path) -> None:
    log = tmp_path / "sf.log"
    log.write_text("Traceback (most recent call last):\n")
    with pytest.raises(RuntimeError, match="did not train; read the log"):
        versus.sample_factory_rate(log)


def test_beast_rates_are_the_counters_growth_after_the_warm_up(tmp_path: Path) -> None:
    # A learner that adds 4,096 frames per step: its rows' own rates jump between few values, the counter does not.
    rows = ["time,frames,env_frames,env_fps,learner_fps"]
    frames = [0, 4096, 12288, 16384, 28672, 32768, 45056]  # at 0, 20, ... 120 s
    rows += [f"{1000 + 20 * i},{f},{2 * f + 7 * i},1,{'9' * (i + 1)}" for i, f in enumerate(frames)]
    path = tmp_path / "logs.csv"
    path.write_text("\n".join(rows) + "\n")
    rates = versus.beast_rates(path)  # from the row at 60 s (16,384 frames) to the one at 120 s (45,056)
    assert rates == pytest.approx({"learner_fps": (45056 - 16384) / 60, "env_fps": (2 * (45056 - 16384) + 21) / 60})


def test_beast_rates_refuse_a_log_too_short_for_a_window(tmp_path: Path) -> None:
    path = tmp_path / "logs.csv"
    path.write_text("time,frames,env_frames,env_fps,learner_fps\n1000,0,0,1,1\n1070,4096,4100,1,1\n")
    with pytest.raises(RuntimeError, match="fewer than two rows"):
        versus.beast_rates(path)


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


def test_rounds_mirror_the_order_so_each_system_gets_early_and_late_windows() -> None:
    assert versus.run_order(1) == ["beast", "sf"]
    assert versus.run_order(2) == ["beast", "sf", "sf", "beast"]
    assert versus.run_order(3) == ["beast", "sf", "sf", "beast", "beast", "sf"]


def test_rounds_below_one_exit_2_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        versus.main(["--rounds", "0"])
    assert exit_info.value.code == 2
    assert "--rounds" in capsys.readouterr().err
