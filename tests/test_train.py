"""`run.py --mode=train` end to end, as a user runs it: a real process, real servers and games, the real model.

A short run on `basic` writes a checkpoint and logs; `--resume` continues its counters; Ctrl-C stops a run cleanly
(exit 0, a final checkpoint, none of the processes it started left); under torchrun, two synchronous learners
end with the same weights, stop together on Ctrl-C, and a rank that dies ends the job. Only pids these tests
started are inspected or killed: other people run ViZDoom games on this machine.
"""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from beast.cli import parse_config
from beast.envs.server import pid_alive, process_group
from beast.runtime.checkpoint import BEST_CHECKPOINT_NAME, CHECKPOINT_NAME, load_checkpoint
from beast.runtime.distributed import fingerprint
from beast.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--d-model=32", "--headdim=16", "--d-state=8", "--head-hidden=32", "--action-embed-dim=16"]
# 4 envs, rollouts of 8 steps, batches of 4: one learner step is 8 x 4 x 4 = 128 frames.
FAST = [
    "--scenario=basic",
    "--frame-skip=4",
    "--envs-per-server=4",
    "--unroll-length=8",
    "--batch-size=4",
    "--eval-interval-frames=0",
]
FRAMES_PER_STEP = 8 * 4 * 4


def train_cmd(savedir: Path, *flags: str) -> list[str]:
    return [sys.executable, str(ROOT / "run.py"), "--mode=train", f"--savedir={savedir}", *FAST, *SMALL, *flags]


def children(pid: int) -> set[int]:
    """Direct children of `pid` (the env servers a trainer started)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def wait_gone(pids: set[int], timeout_s: float) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = {p for p in pids if pid_alive(p)}
        if not alive:
            return set()
        time.sleep(0.1)
    return {p for p in pids if pid_alive(p)}


@pytest.fixture
def trainers() -> Iterator[list[tuple[subprocess.Popen, set[int]]]]:
    """Trainer processes a test starts, with the pids of everything they started; all killed after the test."""
    started: list[tuple[subprocess.Popen, set[int]]] = []
    yield started
    for proc, pids in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in list(pids):
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_short_run_writes_checkpoint_and_logs_and_resume_continues(tmp_path: Path, trainers) -> None:
    budget = 6 * FRAMES_PER_STEP
    evaluate = [f"--eval-interval-frames={2 * FRAMES_PER_STEP}", "--eval-episodes=2", "--eval-envs=2"]
    proc = subprocess.Popen(
        train_cmd(tmp_path, "--xpid=run", f"--total-frames={budget}", "--log-interval-s=1", *evaluate),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    trainers.append((proc, set()))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    run = tmp_path / "run"
    for name in (CHECKPOINT_NAME, "logs.csv", "config.json"):
        assert (run / name).is_file(), f"{name} missing; output:\n{out}"
    assert list(run.glob("events.out.tfevents.*")), "no TensorBoard event file"
    first = load_checkpoint(run / CHECKPOINT_NAME)
    counters = first["counters"]
    assert counters["learner_steps"] == 6
    assert counters["frames"] == budget
    assert counters["env_steps"] >= 6 * 8 * 4
    rows = read_rows(run / "logs.csv")
    assert rows and float(rows[-1]["frames"]) == budget
    assert any(r["total_loss"] != "" for r in rows), "no learner statistics logged"
    assert any(r["env_fps"] != "" for r in rows)
    # Evaluation during training: greedy and sampled episodes on envs of their own, the best weights kept.
    evaluated = [r for r in rows if r.get("eval/greedy/mean_return", "") != ""]
    assert evaluated, f"no evaluation logged; output:\n{out}"
    assert all(r["eval/sample/mean_return"] != "" for r in evaluated)
    # Logged when it ends, on that moment's counters, naming the weights it played: logs.csv stays in frame order.
    assert all(2 * FRAMES_PER_STEP <= float(r["eval/frames"]) <= float(r["frames"]) for r in evaluated)
    assert [float(r["frames"]) for r in rows] == sorted(float(r["frames"]) for r in rows)
    assert all(-400 < float(r["eval/greedy/mean_return"]) < 110 for r in evaluated)  # basic's possible returns
    best = load_checkpoint(run / BEST_CHECKPOINT_NAME)
    assert best["optimizer"] is None and best["counters"]["frames"] >= 2 * FRAMES_PER_STEP
    assert best["counters"]["best_return_milli"] == round(
        1000 * max(float(r["eval/greedy/mean_return"]) for r in evaluated)
    )

    proc = subprocess.Popen(
        train_cmd(tmp_path, "--xpid=run", "--resume", f"--total-frames={2 * budget}", "--log-interval-s=1"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    trainers.append((proc, set()))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    # The run's own settings came back from config.json; the flags that change them are named.
    assert "resuming with the settings in config.json; changed by flags:" in out, out
    assert f"--total-frames {budget} -> {2 * budget}" in out and "--eval-interval-frames 256 -> 0" in out, out
    second = load_checkpoint(run / CHECKPOINT_NAME)
    assert second["counters"]["learner_steps"] == 12
    assert second["counters"]["frames"] == 2 * budget
    assert second["counters"]["env_steps"] > counters["env_steps"]
    assert second["counters"]["episodes"] >= counters["episodes"]
    # The optimiser state came along (RMSProp's step count continues), and the weights moved on from the first run.
    assert second["scheduler"]["last_epoch"] == 12
    moved = any(not torch.equal(second["model"][k], first["model"][k]) for k in first["model"])
    assert moved
    frames = [float(r["frames"]) for r in read_rows(run / "logs.csv")]
    assert frames == sorted(frames) and frames[-1] == 2 * budget


def test_a_built_trainer_counts_and_saves_before_it_runs(tmp_path: Path) -> None:
    cfg = parse_config(["--mode=train", f"--savedir={tmp_path}", "--xpid=built", *FAST, *SMALL])
    (tmp_path / "built").mkdir()
    trainer = Trainer(cfg, tmp_path / "built", threading.Event())
    try:
        trainer.build()
        assert trainer.counters() == {
            "frames": 0,
            "learner_steps": 0,
            "env_steps": 0,
            "env_frames": 0,
            "episodes": 0,
            "doom_skill": cfg.doom_skill,
            "ranks": 1,
        }
        stats = trainer.stats()
        assert stats["buffers_free"] == trainer.pool.num_buffers and stats["mean_return"] is None
        trainer.save()
    finally:
        trainer.envs.close()
    saved = load_checkpoint(tmp_path / "built" / CHECKPOINT_NAME)
    assert saved["counters"]["learner_steps"] == 0 and saved["num_actions"] == trainer.num_actions


def test_ctrl_c_exits_zero_with_a_final_checkpoint_and_no_processes_left(tmp_path: Path, trainers) -> None:
    proc = subprocess.Popen(
        train_cmd(tmp_path, "--xpid=run", "--total-frames=100000000", "--log-interval-s=1", "--num-servers=2"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started: set[int] = set()
    trainers.append((proc, started))
    run = tmp_path / "run"
    deadline = time.monotonic() + 180
    # Wait until it trains: a log row with at least one learner step.
    while True:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "no learner step within 180 s"
        servers = children(proc.pid)
        for server in servers:
            started |= process_group(server) | {server}
        if (run / "logs.csv").exists():
            rows = read_rows(run / "logs.csv")
            if rows and float(rows[-1]["learner_steps"] or 0) >= 1 and len(servers) >= 2:
                break
        time.sleep(0.5)
    assert len(started) >= 2 + 2 * 4, f"expected 2 servers and 8 engines, saw {started}"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, out
    assert elapsed < 15, f"took {elapsed:.1f} s to stop"
    assert "Traceback" not in out, out
    checkpoint = load_checkpoint(run / CHECKPOINT_NAME)
    assert checkpoint["counters"]["learner_steps"] >= 1
    # The last line tells the user where the final checkpoint is and how far training got.
    last = out.strip().splitlines()[-1]
    assert str(run / CHECKPOINT_NAME) in last and f"{checkpoint['counters']['frames']:,} frames" in last, last
    left = wait_gone(started, 5.0)
    assert not left, f"processes left behind: {left}"


def descendants(pid: int) -> set[int]:
    """Every process below `pid`: torchrun's ranks, their env servers and those servers' engines."""
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        below = set().union(*(children(p) for p in frontier)) - found
        found |= below
        frontier = below
    return found


def torchrun(savedir: Path, *flags: str) -> subprocess.Popen:
    """`torchrun --standalone --nproc_per_node=2 run.py --mode=train ...` in a process group of its own, as a
    terminal runs it (so a Ctrl-C can reach every process at once)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            *train_cmd(savedir, "--xpid=ddp", *flags)[1:],
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for_learner_steps(proc: subprocess.Popen, run: Path, steps: int, started: set[int]) -> None:
    """Until rank 0's log shows `steps` learner steps, noting every process the job started."""
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, f"fewer than {steps} learner steps within 180 s"
        started |= descendants(proc.pid)
        rows = read_rows(run / "logs.csv") if (run / "logs.csv").exists() else []
        if rows and float(rows[-1]["learner_steps"] or 0) >= steps:
            return
        time.sleep(0.3)


def test_two_synchronous_learners_under_torchrun(tmp_path: Path, trainers) -> None:
    """`torchrun --standalone --nproc_per_node=2` on gloo: both ranks end bit-identical (the trainer compares their
    weights' CRC-32, and rank 0's checkpoint has that CRC), each step counts both ranks' frames, rank 0 alone writes
    the run's files, and nothing started is left."""
    steps = 5
    proc = torchrun(tmp_path, f"--total-frames={steps * 2 * FRAMES_PER_STEP}")
    started: set[int] = set()
    trainers.append((proc, started))
    while proc.poll() is None:
        started |= descendants(proc.pid)
        time.sleep(0.2)
    out = proc.communicate()[0]
    assert proc.returncode == 0, out
    assert len(started) >= 2 + 2 * (1 + 4), f"expected 2 ranks, each with a server of 4 engines: {started}"
    same = [line for line in out.splitlines() if "ranks hold the same weights" in line]
    assert len(same) == 1 and "the 2 ranks" in same[0], out
    crc = int(same[0].split("crc32 ")[1].rstrip(")"), 16)
    run = tmp_path / "ddp"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]
    names = sorted(p.name for p in run.iterdir())
    events = [name for name in names if name.startswith("events.out.tfevents.")]
    assert len(events) == 1 and sorted(set(names) - set(events)) == ["checkpoint.pt", "config.json", "logs.csv"]
    checkpoint = load_checkpoint(run / CHECKPOINT_NAME)
    assert fingerprint(checkpoint["model"]) == crc
    counters = checkpoint["counters"]
    assert counters["learner_steps"] == steps and counters["ranks"] == 2
    assert counters["frames"] == steps * 2 * FRAMES_PER_STEP
    rows = read_rows(run / "logs.csv")
    assert float(rows[-1]["env_frames"]) >= counters["frames"]  # both ranks' actors, summed
    assert out.count("beast: stopped at") == 1, out
    left = wait_gone(started, 10.0)
    assert not left, f"processes left behind: {left}"
    # Resumed on one rank: the counters and the schedule go on by frames, a step is now one rank's, a line says so.
    budget = (steps * 2 + 2) * FRAMES_PER_STEP
    resumed = subprocess.run(
        train_cmd(tmp_path, "--xpid=ddp", "--resume", f"--total-frames={budget}"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming a run of 2 rank(s) on 1" in resumed.stderr, resumed.stderr
    after = load_checkpoint(run / CHECKPOINT_NAME)
    assert after["counters"]["frames"] == budget and after["counters"]["learner_steps"] == steps + 2
    assert after["counters"]["ranks"] == 1 and after["scheduler"]["last_epoch"] == budget // FRAMES_PER_STEP


def test_ctrl_c_stops_every_rank_with_one_final_checkpoint(tmp_path: Path, trainers) -> None:
    """Ctrl-C in a terminal signals torchrun and every rank at once (one process group), and torchrun forwards it
    to the ranks again: the ranks end after the same step with the same weights, rank 0 writes the final
    checkpoint and nothing the job started is left. (torchrun itself then reports its SignalException and exits
    1, whatever the ranks did: that is torchrun's way.)"""
    proc = torchrun(tmp_path, "--total-frames=100000000", "--log-interval-s=1")
    started: set[int] = set()
    trainers.append((proc, started))
    wait_for_learner_steps(proc, tmp_path / "ddp", 2, started)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=90)
    assert "[rank" not in out, out  # no rank raised (torchrun prefixes a rank's traceback with its number)
    assert "ranks hold the same weights" in out and out.count("beast: stopped at") == 1, out
    checkpoint = load_checkpoint(tmp_path / "ddp" / CHECKPOINT_NAME)
    assert checkpoint["counters"]["frames"] == checkpoint["counters"]["learner_steps"] * 2 * FRAMES_PER_STEP
    left = wait_gone(started, 10.0)
    assert not left, f"processes left behind: {left}"


def test_a_rank_that_dies_ends_the_job_naming_it(tmp_path: Path, trainers) -> None:
    """SIGKILL one rank mid-run: torchrun stops the others and names the dead rank; nothing is left waiting at a
    collective, and no env server or engine of either rank survives."""
    proc = torchrun(tmp_path, "--total-frames=100000000", "--log-interval-s=1")
    started: set[int] = set()
    trainers.append((proc, started))
    wait_for_learner_steps(proc, tmp_path / "ddp", 2, started)
    victim = max(children(proc.pid))
    os.kill(victim, signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert f"exitcode  : -9 (pid: {victim})" in out, out
    left = wait_gone(started, 15.0)
    assert not left, f"processes left behind: {left}"
