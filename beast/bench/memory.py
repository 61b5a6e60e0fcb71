"""Resident memory of processes, from /proc: what the benchmarks report beside the rates (Linux only)."""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterable
from pathlib import Path


def rss_mib(pid: int) -> float:
    """The resident set of process `pid` now, in MiB (0 for a process that is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def total_rss_mib(pids: Iterable[int]) -> float:
    return sum(rss_mib(pid) for pid in pids)


def peak_rss_mib_of_this_process() -> float:
    """The peak resident set of this process so far (getrusage's maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_tree(root: int) -> list[int]:
    """`root` and every process below it (by parent pid)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                children.setdefault(int(stat[stat.rfind(")") + 2 :].split()[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found
