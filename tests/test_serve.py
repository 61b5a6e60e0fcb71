"""`run.py --mode=serve`: games for a trainer on another host, CURVE off loopback with an allow-list, and a trainer
that trains on a served server and survives its restart. Real processes, real sockets (tcp on this host, the
server bound to every interface so that it must use CURVE). Only pids these tests started are killed."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from beast.envs.curve import ensure_curve_keypair
from beast.envs.server import pid_alive

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--d-model=32", "--headdim=16", "--d-state=8", "--head-hidden=32", "--action-embed-dim=16"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_cmd(port: int, curve_dir: Path, *flags: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "run.py"),
        "--mode=serve",
        f"--listen=tcp://0.0.0.0:{port}",
        f"--curve-dir={curve_dir}",
        "--scenario=basic",
        "--envs-per-server=2",
        *flags,
    ]


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                    found.add(int(entry.name))
    return found


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            for child in children(proc.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child, signal.SIGKILL)
            proc.kill()
            proc.wait(10)


def test_serving_off_loopback_needs_an_allow_list_and_creates_the_servers_keys(tmp_path: Path) -> None:
    curve = tmp_path / "curve"
    proc = subprocess.run(serve_cmd(free_port(), curve), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "allowed_clients lists no trainer yet" in proc.stderr, proc.stderr
    assert (curve / "server.key").stat().st_mode & 0o077 == 0 and (curve / "server.pub").is_file()
    assert (curve / "allowed_clients").is_file()


def test_a_trainer_trains_on_a_served_server_and_survives_its_restart(tmp_path: Path, processes) -> None:
    curve, port = tmp_path / "curve", free_port()
    curve.mkdir()
    ensure_curve_keypair(tmp_path / "trainer.key")
    (curve / "allowed_clients").write_text((tmp_path / "trainer.key.pub").read_text())
    serve_log = tmp_path / "serve.log"
    with open(serve_log, "w") as log:
        serve = subprocess.Popen(serve_cmd(port, curve), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    processes.append(serve)
    wait_for(lambda: "serving basic" in serve_log.read_text(), 120, "the served server")

    train = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "--mode=train",
            f"--savedir={tmp_path}",
            "--xpid=remote",
            "--scenario=basic",
            "--num-servers=0",  # every env is the served server's: the restart below leaves the trainer none
            "--envs-per-server=2",
            f"--env-servers=tcp://127.0.0.1:{port}",
            f"--curve-server-key={curve / 'server.pub'}",
            f"--curve-client-key={tmp_path / 'trainer.key'}",
            "--envserver-hang-timeout-s=3",
            "--unroll-length=8",
            "--batch-size=4",
            "--eval-interval-frames=0",
            "--log-interval-s=1",
            f"--total-frames={400 * 8 * 4 * 8}",  # 400 learner steps: the restart happens well before the end
            *SMALL,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    processes.append(train)
    logs = tmp_path / "remote" / "logs.csv"

    def learner_steps() -> int:
        if not logs.exists():
            return 0
        with open(logs, newline="") as f:
            rows = list(csv.DictReader(f))
        return int(float(rows[-1]["learner_steps"])) if rows else 0

    wait_for(lambda: learner_steps() >= 3 or train.poll() is not None, 180, "the trainer's first learner steps")
    served = children(serve.pid)
    assert len(served) == 1, served
    os.killpg(served.pop(), signal.SIGKILL)  # the served env server and its engines: serve starts a new one
    wait_for(lambda: serve_log.read_text().count("serving basic") == 2, 120, "the served server's restart")

    out, _ = train.communicate(timeout=600)
    assert train.returncode == 0, out
    assert "restarting it" in out, out
    with open(logs, newline="") as f:
        last = list(csv.DictReader(f))[-1]
    assert float(last["server_restarts"]) >= 1

    serve.send_signal(signal.SIGINT)
    assert serve.wait(30) == 0, serve_log.read_text()
    assert "the server exited" in serve_log.read_text()
    assert not any(pid_alive(pid) for pid in children(serve.pid))
