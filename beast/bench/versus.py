"""beast and Sample Factory side by side on this machine: `make versus-sf` (docs/benchmarks.md, "Against Sample
Factory").

Each trains deadly_corridor on the CPU for `--seconds`, one after the other, nothing else running: beast on its
defaults (evaluations and the curriculum off, which Sample Factory does not have), Sample Factory 2.1.1 with the
setting that was its fastest here (2 workers x 16 envs). The rate of each is measured after the first `WARMUP_S`
(for each, the growth of its frame counters: beast's logs.csv, Sample Factory's "Total num frames" reports), and
the peak resident memory of each system's processes is sampled as it runs (beast: the trainer, and the env server
with its engines per env).

Why rounds in the order beast, SF, SF, beast, ...: this VM's CPU runs ~25% slower in some windows than in others,
and two systems run once each, one after the other, can land in different windows (docs/benchmarks.md). Mirrored
rounds give each system the same share of early and late minutes, and the ratio is that of the two medians.

Sample Factory lives in a venv of its own (`.venv-sf`), which only `--install` creates: torch at this project's
pin first, so that pip takes the local CPU build and never a CUDA one, then Sample Factory and the same vizdoom.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from beast.bench.memory import process_tree, rss_mib

ROOT = Path(__file__).resolve().parents[2]
SF_VENV = ROOT / ".venv-sf"
TORCH_PIN = "torch==2.13.0"
SF_PACKAGES = ("sample-factory==2.1.1", "vizdoom==1.3.2")
SF_TRAIN = ("-m", "sf_examples.vizdoom.train_vizdoom", "--env=doom_deadly_corridor", "--device=cpu")
SF_WORKERS = ("--num_workers=2", "--num_envs_per_worker=16")
BEAST_FLAGS = ("--mode=train", "--eval-interval-frames=0", "--curriculum-threshold=0", "--log-interval-s=5")
WARMUP_S = 60.0
STOP_GRACE_S = 60.0
RSS_PERIOD_S = 2.0
# Its report lines, after the colour codes it writes even into a file: "[2026-12-01 21:05:47,560][19566] Fps is (10
# sec: 410.2, 60 sec: 340.2, 300 sec: 340.2). Total num frames: 4096. ..."
SF_REPORT = re.compile(
    r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+)\]\[\d+\] fps is \(10 sec: [^)]*\)\. Total num frames: (\d+)", re.IGNORECASE
)


@dataclass
class Memory:
    """Resident memory of a process tree, sampled every `RSS_PERIOD_S`: the peak of the whole tree and of its
    root alone, in MiB, and the samples (seconds since start, tree MiB, root MiB) to see whether either grows."""

    peak_tree_mib: float = 0.0
    peak_root_mib: float = 0.0
    samples: list[tuple[float, float, float]] = field(default_factory=list)


def run_for(command: list[str], seconds: float, log: Path) -> Memory:
    """Run `command` (its output to `log`) for `seconds`, sampling its memory, then SIGINT its process group and
    wait for it to stop (SIGKILL after `STOP_GRACE_S`)."""
    memory = Memory()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds and proc.poll() is None:
            sizes = {pid: rss_mib(pid) for pid in process_tree(proc.pid)}  # one reading of each
            tree, root = sum(sizes.values()), sizes.get(proc.pid, 0.0)
            memory.samples.append((round(time.monotonic() - t0, 1), round(tree, 1), round(root, 1)))
            memory.peak_tree_mib = max(memory.peak_tree_mib, tree)
            memory.peak_root_mib = max(memory.peak_root_mib, root)
            time.sleep(RSS_PERIOD_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of its group outlived it (one that ignored SIGINT)
    return memory


def beast_rates(logs_csv: Path) -> dict[str, float]:
    """env and learner frames/s from `WARMUP_S` after the logs' first row to their last: the growth of the
    counters `env_frames` and `frames` over that window. Not a median of the rows' own rates: a learner step adds
    4,096 frames at once, so a 5-s row holds 3 or 4 of them and its rate is one of a few values (2,458, 3,277)."""
    with open(logs_csv) as f:
        rows = [row for row in csv.DictReader(f) if row.get("env_fps")]
    t0 = float(rows[0]["time"])
    steady = [row for row in rows if float(row["time"]) - t0 >= WARMUP_S]
    if len(steady) < 2:
        raise RuntimeError(f"{logs_csv} has fewer than two rows after the first {WARMUP_S:.0f} s: train it longer.")
    first, last = steady[0], steady[-1]
    seconds = float(last["time"]) - float(first["time"])
    return {
        rate: (float(last[counter]) - float(first[counter])) / seconds
        for rate, counter in (("env_fps", "env_frames"), ("learner_fps", "frames"))
    }


def sample_factory_rate(log: Path) -> float:
    """Sample Factory's frames/s from `WARMUP_S` after its first report to its last: the growth of its "Total num
    frames" counter over that window, as `beast_rates` reads beast's. (Its own "10 sec" rates step in whole
    rollout batches: the medians of two runs here were both exactly 2,048.0.)"""
    reports = [
        (datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f"), int(m.group(2)))
        for line in log.read_text(errors="replace").splitlines()
        if (m := SF_REPORT.search(line))
    ]
    if not reports:
        raise RuntimeError(
            f"no 'Fps is ... Total num frames' line in {log}: Sample Factory did not train; read the log."
        )
    t0 = reports[0][0]
    steady = [(at, frames) for at, frames in reports if (at - t0).total_seconds() >= WARMUP_S]
    if len(steady) < 2:
        raise RuntimeError(f"{log} has fewer than two reports after the first {WARMUP_S:.0f} s: train it longer.")
    (first_at, first), (last_at, last) = steady[0], steady[-1]
    return (last - first) / (last_at - first_at).total_seconds()


def install_sample_factory() -> None:
    """Create `.venv-sf` with the CPU torch first, then Sample Factory and vizdoom at their pins."""
    python = SF_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(SF_VENV)], check=True)
    for packages in ((TORCH_PIN,), SF_PACKAGES):
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)


def run_order(rounds: int) -> list[str]:
    """The systems to run, mirrored round by round: beast, sf, sf, beast, beast, sf, ..."""
    pair = ["beast", "sf"]
    return [name for r in range(rounds) for name in (pair if r % 2 == 0 else pair[::-1])]


def run_system(name: str, index: int, seconds: float, work: Path) -> tuple[float, float, Memory]:
    """Train system `name` ("beast" or "sf") for `seconds` as run `index`; (learner frames/s, env frames/s,
    memory). Sample Factory's one counter is both."""
    xpid = f"{name}{index}"
    if name == "beast":
        command = [sys.executable, str(ROOT / "run.py"), *BEAST_FLAGS, f"--savedir={work}", f"--xpid={xpid}"]
        memory = run_for(command, seconds, work / f"{xpid}.log")
        rates = beast_rates(work / xpid / "logs.csv")
        return rates["learner_fps"], rates["env_fps"], memory
    command = [str(SF_VENV / "bin" / "python"), *SF_TRAIN, *SF_WORKERS, f"--train_dir={work}", f"--experiment={xpid}"]
    memory = run_for(command, seconds, work / f"{xpid}.log")
    rate = sample_factory_rate(work / f"{xpid}.log")
    return rate, rate, memory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=170.0, help="Training time of each run.")
    parser.add_argument("--rounds", type=int, default=2, help="Rounds of one run per system, mirrored (>= 1).")
    parser.add_argument("--install", action="store_true", help="Install Sample Factory into .venv-sf first.")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}.")
    if args.install:
        install_sample_factory()
    if not (SF_VENV / "bin" / "python").exists():
        parser.error(f"{SF_VENV} does not exist: pass --install to create it (Sample Factory 2.1.1, CPU torch).")
    work = Path(tempfile.mkdtemp(prefix="beast-versus-"))  # kept if anything fails: the logs say why
    runs = [(name, *run_system(name, i, args.seconds, work)) for i, name in enumerate(run_order(args.rounds))]
    shutil.rmtree(work)
    of = {name: [run for run in runs if run[0] == name] for name in ("beast", "sf")}
    beast_fps, sf_fps = statistics.median([r[1] for r in of["beast"]]), statistics.median([r[1] for r in of["sf"]])
    result = {
        "seconds": args.seconds,
        "order": [name for name, *_ in runs],
        "beast_learner_fps_runs": [r[1] for r in of["beast"]],
        "beast_env_fps_runs": [r[2] for r in of["beast"]],
        "sample_factory_fps_runs": [r[1] for r in of["sf"]],
        "beast_learner_fps": beast_fps,
        "sample_factory_fps": sf_fps,
        "ratio": beast_fps / sf_fps,
        "beast_peak_rss_mib": {
            "all": max(r[3].peak_tree_mib for r in of["beast"]),
            "trainer": max(r[3].peak_root_mib for r in of["beast"]),
        },
        "sample_factory_peak_rss_mib": max(r[3].peak_tree_mib for r in of["sf"]),
        "beast_rss_samples": [r[3].samples for r in of["beast"]],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        runs_of = {name: ", ".join(f"{r[1]:,.0f}" for r in of[name]) for name in of}
        print(
            f"deadly_corridor, {args.seconds:.0f} s a run, order {' '.join(result['order'])}, "
            f"rates after {WARMUP_S:.0f} s\n"
            f"beast:          learner {beast_fps:,.0f} frames/s (runs {runs_of['beast']}), "
            f"peak RSS {result['beast_peak_rss_mib']['all']:,.0f} MiB "
            f"(trainer {result['beast_peak_rss_mib']['trainer']:,.0f})\n"
            f"Sample Factory: {sf_fps:,.0f} frames/s (runs {runs_of['sf']}), "
            f"peak RSS {result['sample_factory_peak_rss_mib']:,.0f} MiB\n"
            f"beast / Sample Factory (medians of learner frames): {result['ratio']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
