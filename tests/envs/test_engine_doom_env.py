"""Runs envserver's C++ engine-side tests (envserver/tests/doom_env_test.cpp) against the real ViZDoom engine.

They pin what the wire-level tests cannot see: the resampler against a brute-force area integral, live-enemy
masks, audio, terminal vs truncated episode ends, byte-identical replays per seed, and engine clean-up after a
crash, a hang, or a destructor on a stopped engine.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from beast.envs.scenarios import vizdoom_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_BINARY = REPO_ROOT / "envserver" / "build" / "doom_env_test"


@pytest.mark.slow
def test_engine_doom_env_cpp_suite(tmp_path: Path) -> None:
    if not TEST_BINARY.is_file():
        pytest.fail(f"{TEST_BINARY} is missing; build it with `make envserver`.")
    # cwd: the engine writes its _vizdoom.ini into the working directory.
    proc = subprocess.run(
        [str(TEST_BINARY), str(vizdoom_dir())], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert " 0 failed check(s)" in proc.stdout
