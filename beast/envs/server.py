"""Start, supervise and stop a local C++ env server, leaving no process behind.

Orphan safety has three layers (docs/protocol.md, "Process lifetime"):
1. The server runs in a session of its own (`start_new_session=True`), so it and its engines form one process
   group whose id is the server's pid. `stop()` asks politely (SIGTERM: the server closes its games) and then
   SIGKILLs the whole group, since ViZDoom engines have been seen to outlive their client and ignore SIGTERM.
2. The server watches its parent (getppid) and exits, killing its group, when this process dies, even by
   SIGKILL; it also exits after `idle_timeout_s` without a message from any client.
3. If the server itself dies (kill -9), a reaper thread here notices at once and SIGKILLs its group, which the
   engines are still in. It waits with WNOWAIT first, so the group id cannot be reused before the kill.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from beast.config import Config
from beast.envs.client import EnvClient
from beast.envs.scenarios import resolve_scenario, vizdoom_dir

REPO_ROOT = Path(__file__).resolve().parents[2]


def _default(name: str) -> Any:
    """Defaults come from Config, the one place that defines them."""
    return next(f.default for f in dataclasses.fields(Config) if f.name == name)


class EnvServerStartError(RuntimeError):
    """The env server binary is missing or the server did not come up; the message says what to do."""


def find_binary(path: str | os.PathLike[str]) -> Path:
    """The env server executable: `path` as given, else relative to the repository root."""
    for candidate in (Path(path), REPO_ROOT / path):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate.resolve()
    raise EnvServerStartError(f"the env server binary {path} does not exist; run `make envserver` to build it.")


class EnvServer:
    """One local env server process hosting `num_envs` games, as a context manager.

    >>> with EnvServer(scenario="basic", num_envs=4, seed=1) as server, EnvClient(server.address) as env:
    ...     obs = env.reset()
    """

    def __init__(
        self,
        scenario: str,
        num_envs: int,
        seed: int = 0,
        frame_skip: int | None = None,
        doom_skill: int | None = None,
        screen_resolution: str | None = None,
        enemy_classes: Sequence[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        idle_timeout_s: float | None = None,
        address: str | None = None,
        curve_secret_key_file: str | os.PathLike[str] | None = None,
        curve_allowed_clients_file: str | os.PathLike[str] | None = None,
        startup_timeout_s: float | None = None,
    ) -> None:
        self.scenario = scenario
        self.num_envs = num_envs
        self.seed = seed
        self.frame_skip = _default("frame_skip") if frame_skip is None else frame_skip
        self.doom_skill = _default("doom_skill") if doom_skill is None else doom_skill
        self.screen_resolution = screen_resolution or _default("screen_resolution")
        if enemy_classes is None:
            enemy_classes = [c for c in _default("enemy_classes").split(",") if c]
        self.enemy_classes = list(enemy_classes)
        self.binary = binary or _default("envserver_binary")
        self.idle_timeout_s = _default("envserver_idle_timeout_s") if idle_timeout_s is None else idle_timeout_s
        self.curve_secret_key_file = curve_secret_key_file
        self.curve_allowed_clients_file = curve_allowed_clients_file
        self.startup_timeout_s = (
            _default("envserver_startup_timeout_s") if startup_timeout_s is None else startup_timeout_s
        )
        self._requested_address = address
        self.address = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: str | None = None
        self._exited = threading.Event()
        self._reaper: threading.Thread | None = None
        self._stderr_path: Path | None = None

    @classmethod
    def from_config(cls, cfg: Config, index: int = 0) -> EnvServer:
        """Server `index` of a run: its envs get base seed cfg.seed + index * envs_per_server, so no two envs of
        the run share a seed."""
        return cls(
            scenario=cfg.scenario,
            num_envs=cfg.envs_per_server,
            seed=cfg.seed + index * cfg.envs_per_server,
            frame_skip=cfg.frame_skip,
            doom_skill=cfg.doom_skill,
            screen_resolution=cfg.screen_resolution,
            enemy_classes=cfg.enemy_class_list(),
            binary=cfg.envserver_binary,
            idle_timeout_s=cfg.envserver_idle_timeout_s,
            startup_timeout_s=cfg.envserver_startup_timeout_s,
        )

    # --- lifetime --------------------------------------------------------------------------------------------
    def command(self) -> list[str]:
        """The server's command line: every setting is passed, so the binary's own defaults never apply."""
        cmd = [
            str(find_binary(self.binary)),
            f"--address={self.address}",
            f"--scenario={resolve_scenario(self.scenario)}",
            f"--num-envs={self.num_envs}",
            f"--seed={self.seed}",
            f"--frame-skip={self.frame_skip}",
            f"--doom-skill={self.doom_skill}",
            f"--resolution={self.screen_resolution}",
            f"--vizdoom-dir={vizdoom_dir()}",
            f"--idle-timeout-s={self.idle_timeout_s}",
            f"--startup-timeout-s={self.startup_timeout_s}",
        ]
        if self.enemy_classes:
            cmd.append(f"--enemy-classes={','.join(self.enemy_classes)}")
        if self.curve_secret_key_file:
            cmd.append(f"--curve-secret-key-file={self.curve_secret_key_file}")
        if self.curve_allowed_clients_file:
            cmd.append(f"--curve-allowed-clients-file={self.curve_allowed_clients_file}")
        return cmd

    def start(self) -> EnvServer:
        self._tmpdir = tempfile.mkdtemp(prefix="beast-env-")
        self.address = self._requested_address or f"ipc://{self._tmpdir}/envserver.sock"
        try:
            cmd = self.command()
        except BaseException:  # a missing binary or scenario: nothing was started, leave nothing behind
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            raise
        self._stderr_path = Path(self._tmpdir) / "stderr.log"
        # Engines starting together in a fresh directory race to create _vizdoom/ (check, then mkdir) and the
        # loser dies at startup; creating it first leaves nothing to race for.
        (Path(self._tmpdir) / "_vizdoom").mkdir()
        with open(self._stderr_path, "wb") as stderr:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
                cwd=self._tmpdir,  # the engines write _vizdoom/ and _vizdoom.ini into their working directory
            )
        self._exited.clear()
        self._reaper = threading.Thread(target=self._reap, name=f"envserver-reaper-{self._proc.pid}", daemon=True)
        self._reaper.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop(timeout_s=1.0)
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + self.startup_timeout_s + 15.0
        line = b""
        while b"\n" not in line:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EnvServerStartError(
                    f"env server not ready after {self.startup_timeout_s + 15:.0f} s. Its stderr:\n{self.stderr_tail()}"
                )
            readable, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            chunk = os.read(fd, 4096) if readable else b""
            if readable and not chunk:  # EOF: it exited
                self._exited.wait(5.0)
                rc = self._proc.returncode
                raise EnvServerStartError(f"env server exited during startup (status {rc}):\n{self.stderr_tail()}")
            line += chunk
        if not line.startswith(b"READY "):
            raise EnvServerStartError(f"env server said {line!r} instead of READY:\n{self.stderr_tail()}")

    def _reap(self) -> None:
        assert self._proc is not None
        pid = self._proc.pid
        # Exited but not yet reaped: its pid, hence its group id, stays reserved while we kill the group.
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        _killpg(pid)
        self._proc.wait()
        self._exited.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the server to close its games (SIGTERM), then SIGKILL its process group. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if not self._exited.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            if not self._exited.wait(timeout_s):
                _killpg(proc.pid)
                self._exited.wait(timeout_s)
        if self._reaper is not None:
            self._reaper.join(timeout_s)
        if proc.stdout is not None:
            proc.stdout.close()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        self._proc = None

    def __enter__(self) -> EnvServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- inspection ------------------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the env server is not running; call start() or use it as a context manager.")
        return self._proc.pid

    def alive(self) -> bool:
        """True while the server process runs (its death is noticed, and its group killed, by the reaper)."""
        return self._proc is not None and not self._exited.is_set()

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Wait for the server to exit (and its group to be killed); its exit status, or None on timeout."""
        self._exited.wait(timeout_s)
        return self.returncode

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None and self._exited.is_set() else None

    def process_group(self) -> set[int]:
        """The server's pid and its engines' (they share its process group), while it runs."""
        return process_group(self.pid) if self.alive() else set()

    def stderr_tail(self, lines: int = 30) -> str:
        if self._stderr_path is None or not self._stderr_path.exists():
            return ""
        text = self._stderr_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def client(self, **kwargs: Any) -> EnvClient:
        """A client connected to this server (CURVE keys, if any, are the caller's to pass)."""
        return EnvClient(self.address, **kwargs)


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    """True if `pid` exists and has not exited (a zombie has exited; only its parent has not reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def process_group(pgid: int) -> set[int]:
    """Live pids in process group `pgid`: for a server EnvServer started, the server and its engines."""
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            state, _ppid, group = stat[stat.rfind(")") + 2 :].split()[:3]
            if int(group) == pgid and state != "Z":
                members.add(int(entry.name))
    return members
