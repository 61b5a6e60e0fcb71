"""The command line: derived from Config, and every user mistake exits 2 with a message naming the flag."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from beast.cli import parse_config, resolve_config
from beast.config import CONFIG_NAME, Config, ConfigError, config_sections, flag_name
from beast.envs.scenarios import SCENARIO_SPECS, scenario_spec

ROOT = Path(__file__).resolve().parents[1]


def test_no_flags_gives_the_defaults_with_the_default_scenarios_spec() -> None:
    spec = scenario_spec(Config().scenario)
    assert spec, "the default scenario has a spec"
    assert parse_config([]) == dataclasses.replace(Config(), **spec)  # type: ignore[arg-type]


def test_a_flag_overrides_the_scenario_spec_and_the_spec_overrides_the_default() -> None:
    assert SCENARIO_SPECS["basic"]["frame_skip"] != Config().frame_skip
    assert parse_config(["--scenario=basic"]).frame_skip == SCENARIO_SPECS["basic"]["frame_skip"]
    assert parse_config(["--scenario=basic", "--frame-skip=3"]).frame_skip == 3


def test_an_unknown_key_in_a_scenario_spec_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SCENARIO_SPECS, "basic", {"frame_skipp": 8})
    with pytest.raises(ConfigError, match="frame_skipp"):
        resolve_config({"scenario": "basic"})


@pytest.mark.parametrize(("flag", "named"), [("--doom-skill=6", "--doom-skill"), ("--popart-beta=0", "--popart-beta")])
def test_out_of_range_learning_settings_exit_2_naming_the_flag(
    flag: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_config([flag])
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err


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


def test_help_groups_the_flags_by_the_sections_of_config() -> None:
    help_text = subprocess.run(
        [sys.executable, "run.py", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    sections = config_sections()
    assert list(sections) == [
        "run",
        "environment",
        "reward",
        "model",
        "learner",
        "runtime",
        "test and plot",
        "serve",
        "bench",
    ]
    assert sorted(name for names in sections.values() for name in names) == sorted(
        f.name for f in dataclasses.fields(Config)
    )
    starts = [help_text.index(f"\n{section}:\n") for section in sections]
    assert starts == sorted(starts), "the groups are not in Config's order"
    ends = [*starts[1:], len(help_text)]
    for (section, names), start, end in zip(sections.items(), starts, ends, strict=True):
        for name in names:
            assert f"  {flag_name(name)}" in help_text[start:end], f"{flag_name(name)} is not under {section}:"


def test_resume_restores_the_runs_settings_and_says_which_flags_change_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trained = dataclasses.replace(parse_config(["--scenario=basic"]), xpid="old", discounting=0.9, unroll_length=12)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / CONFIG_NAME).write_text(json.dumps(trained.to_dict()))
    cfg = parse_config(["--resume", "--xpid=old", f"--savedir={tmp_path}", "--learning-rate=5e-4"])
    assert cfg == dataclasses.replace(trained, resume=True, learning_rate=5e-4, savedir=str(tmp_path))
    said = capsys.readouterr().err
    assert "--learning-rate 0.001 -> 0.0005" in said and "--discounting" not in said and "--resume" not in said


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
    assert len(proc.stderr.strip().splitlines()) == 1 and "run.py --help" in proc.stderr, proc.stderr
