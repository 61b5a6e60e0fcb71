"""Fixtures shared by the env server tests (fixtures, not imports: no test folder is a package).

Process checks look only at pids these tests started (a server's pid and its process group), never at process
names: other people run ViZDoom games on the same machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

import pytest

from beast.config import Config
from beast.envs.server import pid_alive


@pytest.fixture(scope="session")
def envserver_binary() -> str:
    """The binary under test; BEAST_ENVSERVER_BINARY lets a private build be tested without envserver/build."""
    return os.environ.get("BEAST_ENVSERVER_BINARY", Config().envserver_binary)


def _wait_gone(pids: Iterable[int], timeout_s: float) -> set[int]:
    pids = set(pids)
    deadline = time.monotonic() + timeout_s
    while True:
        alive = {p for p in pids if pid_alive(p)}
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


@pytest.fixture(scope="session")
def wait_gone() -> Callable[[Iterable[int], float], set[int]]:
    """wait_gone(pids, timeout_s) -> the pids still alive (not zombies) when the timeout expired."""
    return _wait_gone
