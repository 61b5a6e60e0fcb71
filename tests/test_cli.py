"""The command line: derived from Config, and every user mistake exits 2 with a message naming the flag."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from beast.cli import parse_config
from beast.config import Config, flag_name

ROOT = Path(__file__).resolve().parents[1]


def test_no_flags_gives_the_defaults() -> None:
    assert parse_config([]) == Config()


def test_every_field_is_a_flag() -> None:
    cfg = parse_config(
        ["--scenario", "basic", "--batch-size", "4", "--json", "--learning-rate", "1e-3", "--core", "lstm"]
    )
    assert (cfg.scenario, cfg.batch_size, cfg.json, cfg.learning_rate, cfg.core) == ("basic", 4, True, 1e-3, "lstm")
    help_text = subprocess.run(
        [sys.executable, "run.py", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for f in dataclasses.fields(Config):
        assert flag_name(f.name) in help_text


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--no-such-flag"], "--no-such-flag"),
        (["--batch-size", "many"], "--batch-size"),
        (["--mode", "fly"], "--mode"),
        (["--batch-size", "0"], "--batch-size"),
        (["--headdim", "48"], "--headdim"),
        (["--batch"], "--batch"),  # abbreviations are refused, not guessed
    ],
)
def test_user_mistakes_exit_2_naming_the_flag(argv: list[str], needle: str) -> None:
    proc = subprocess.run([sys.executable, "run.py", *argv], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
