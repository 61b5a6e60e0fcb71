"""No orphans, ever: the server and its engines go away however their owner goes away; bad starts fail kindly.

Every check looks at the pids recorded from this test's own server (its pid and its process group), never at
process names, since other people run games on this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from beast.config import Config
from beast.envs import EnvClient, EnvServer, EnvServerTimeoutError
from beast.envs.scenarios import resolve_scenario, vizdoom_dir
from beast.envs.server import EnvServerStartError, find_binary, process_group

WaitGone = Callable[..., set[int]]


def _kill_all(pids: set[int]) -> None:
    """Cleanup for a failed test: SIGKILL what it recorded (pids it started, nothing else)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def test_kill_9_of_the_parent_takes_server_and_engines_with_it(envserver_binary: str, wait_gone: WaitGone) -> None:
    script = textwrap.dedent(
        """
        import json, sys, time
        from beast.envs import EnvClient, EnvServer
        srv = EnvServer(scenario="basic", num_envs=2, binary=sys.argv[1], idle_timeout_s=600).start()
        info = EnvClient(srv.address).info
        tmpdir = srv.address.removeprefix("ipc://").rsplit("/", 1)[0]
        print(json.dumps({"server": srv.pid, "engines": info.engine_pids, "tmpdir": tmpdir}), flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script, envserver_binary], stdout=subprocess.PIPE)
    recorded: set[int] = set()
    tmpdir = ""
    try:
        ready, _, _ = select.select([parent.stdout], [], [], 120)
        assert ready, "the parent never reported its server"
        line = parent.stdout.readline()
        assert line, "the parent exited before starting its server"
        pids = json.loads(line)
        tmpdir = pids["tmpdir"]
        recorded = {pids["server"], *pids["engines"], *process_group(pids["server"])}
        assert len(recorded) >= 3  # server + 2 engines, all in the server's group
        assert set(pids["engines"]) <= process_group(pids["server"])
        parent.kill()  # SIGKILL: no finally, no atexit, no context manager runs in it
        parent.wait(10)
        assert not wait_gone(recorded, 10.0), "server or engines outlived their parent"
    finally:
        parent.kill()
        parent.wait(10)
        _kill_all({p for p in recorded if p != parent.pid})
        if tmpdir.startswith(tempfile.gettempdir()):  # a SIGKILLed parent cannot remove its temp dir; we do
            shutil.rmtree(tmpdir, ignore_errors=True)


def test_kill_9_of_the_server_takes_its_engines_with_it(envserver_binary: str, wait_gone: WaitGone) -> None:
    with EnvServer(scenario="basic", num_envs=2, binary=envserver_binary) as srv, EnvClient(srv.address) as client:
        group = srv.process_group()
        assert set(client.info.engine_pids) | {srv.pid} <= group
        os.kill(srv.pid, signal.SIGKILL)
        assert srv.wait(5.0) == -signal.SIGKILL and not srv.alive()
        assert not wait_gone(group, 5.0), "engines outlived their server"
        with pytest.raises(EnvServerTimeoutError):  # a dead server is an error, not a hang
            client.step([0, 0], timeout_ms=1000)


def test_idle_timeout_exits_and_pings_keep_it_alive(envserver_binary: str, wait_gone: WaitGone) -> None:
    with EnvServer(scenario="basic", num_envs=1, binary=envserver_binary, idle_timeout_s=2.0) as srv:
        group = srv.process_group()
        with EnvClient(srv.address) as c:
            for _ in range(8):  # 4 s of pings, twice the idle timeout
                c.ping()
                time.sleep(0.5)
            assert srv.alive()
        assert srv.wait(10.0) == 0
        assert "heard nothing" in srv.stderr_tail()
        assert not wait_gone(group, 5.0)


def test_stop_and_close_leave_nothing_behind(envserver_binary: str, wait_gone: WaitGone) -> None:
    with EnvServer(scenario="basic", num_envs=2, binary=envserver_binary) as srv:
        group = srv.process_group()
    assert not wait_gone(group, 5.0)
    with EnvServer(scenario="basic", num_envs=1, binary=envserver_binary) as srv:
        group = srv.process_group()
        EnvClient(srv.address).close(stop_server=True)
        assert not wait_gone(group, 10.0)
        assert srv.wait(5.0) == 0


def test_a_missing_binary_says_to_build_it() -> None:
    with pytest.raises(EnvServerStartError, match="make envserver"):
        EnvServer(scenario="basic", num_envs=1, binary="/nonexistent/beast-envserver").start()


def _run_binary(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(find_binary(binary)), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--num-envs", "0"], "--num-envs"),
        (["--num-envs", "two"], "--num-envs"),
        (["--num-envs", "1", "--frame-skip", "-1"], "--frame-skip"),
        (["--num-envs", "1", "--bogus", "1"], "--bogus"),
        (["--num-envs", "1", "--idle-timeout-s", "soon"], "--idle-timeout-s"),
        (["--num-envs", "1", "--address", "tcp://0.0.0.0:5999"], "--curve-secret-key-file"),
        (["--num-envs", "1", "--address", "tcp://*:5999"], "--curve-secret-key-file"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(envserver_binary: str, args: list[str], named: str) -> None:
    base = ["--scenario", "basic", f"--vizdoom-dir={vizdoom_dir()}"]
    result = _run_binary(envserver_binary, *base, *args)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unknown_scenario_exits_2(envserver_binary: str) -> None:
    args = ["--scenario", "no_such_map", "--num-envs", "1", f"--vizdoom-dir={vizdoom_dir()}"]
    result = _run_binary(envserver_binary, *args)
    assert result.returncode == 2 and "no_such_map" in result.stderr


def test_an_engine_of_another_version_is_refused(envserver_binary: str, tmp_path: Path) -> None:
    fake = tmp_path / "vizdoom"
    fake.write_text("#!/bin/sh\necho 'ViZDoom 1.2.4 (ZDOOM 2.8.1+) - SDL version'\n")
    fake.chmod(0o755)
    cfg = resolve_scenario("basic")
    result = _run_binary(envserver_binary, f"--scenario={cfg}", "--num-envs", "1", f"--vizdoom-dir={tmp_path}")
    assert result.returncode == 2
    assert "1.2.4" in result.stderr and "1.3.2" in result.stderr and "make" in result.stderr


def test_servers_of_one_run_get_disjoint_seed_ranges() -> None:
    cfg = Config(seed=7, envs_per_server=4, scenario="basic")
    servers = [EnvServer.from_config(cfg, index=i) for i in range(3)]
    env_seeds = [s.seed + i for s in servers for i in range(s.num_envs)]  # the server's base seed S, env i: S + i
    assert len(set(env_seeds)) == 12 and servers[0].seed == 7
    assert all(s.num_envs == 4 and s.scenario == "basic" and s.frame_skip == cfg.frame_skip for s in servers)
