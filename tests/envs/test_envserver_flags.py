"""The env server binary's flags against `Config`: the launcher passes every one, and the defaults the binary keeps
for standalone use are `Config`'s, so a server started by hand plays the game a training run would."""

from __future__ import annotations

import re
import subprocess

from beast.config import Config
from beast.envs import EnvServer

# The binary's flag -> the Config field whose default it must share.
SHARED_DEFAULTS = {
    "--seed": "seed",
    "--frame-skip": "frame_skip",
    "--doom-skill": "doom_skill",
    "--resolution": "screen_resolution",
    "--idle-timeout-s": "envserver_idle_timeout_s",
    "--startup-timeout-s": "envserver_startup_timeout_s",
}


def binary_help(binary: str) -> str:
    return subprocess.run([binary, "--help"], capture_output=True, text=True, check=True, timeout=30).stdout


def test_the_binarys_defaults_are_configs(envserver_binary: str) -> None:
    text = binary_help(envserver_binary)
    cfg = Config()
    for flag, name in SHARED_DEFAULTS.items():
        match = re.search(rf"^\s+{re.escape(flag)} \S+\s+.*?\(default ([^;)]+)", text, re.MULTILINE | re.DOTALL)
        assert match, f"{flag} shows no default in --help"
        default = getattr(cfg, name)
        assert type(default)(match.group(1)) == default, f"{flag} defaults to {match.group(1)}, Config to {default}"


def test_the_launcher_passes_every_flag_of_the_binary(envserver_binary: str) -> None:
    known = set(re.findall(r"^  (--[a-z-]+)", binary_help(envserver_binary), re.MULTILINE))
    assert {"--scenario", "--num-envs", "--frame-skip", "--idle-timeout-s"} <= known
    server = EnvServer(
        scenario="basic",
        num_envs=1,
        binary=envserver_binary,
        curve_secret_key_file="keys.txt",
        curve_allowed_clients_file="allowed",
    )
    passed = {arg.split("=", 1)[0] for arg in server.command()[1:]}
    assert passed == known - {"--help"}
