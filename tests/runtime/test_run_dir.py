"""SAVEDIR/XPID: fresh timestamped ids, and the two mistakes that would cost a run refused with exit 2."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from beast.config import Config
from beast.runtime.checkpoint import CHECKPOINT_NAME
from beast.runtime.run_dir import run_dir


def config(tmp_path: Path, **overrides: object) -> Config:
    return dataclasses.replace(Config(), savedir=str(tmp_path / "runs"), **overrides)  # type: ignore[arg-type]


def test_an_empty_xpid_becomes_a_fresh_timestamped_folder_each_call(tmp_path: Path) -> None:
    first = run_dir(config(tmp_path))
    second = run_dir(config(tmp_path))
    assert first.is_dir() and second.is_dir() and first != second
    assert first.parent == tmp_path / "runs"
    assert re.fullmatch(r"\d{8}-\d{6}(-\d+)?", first.name), first.name
    assert re.fullmatch(r"\d{8}-\d{6}(-\d+)?", second.name), second.name


def test_a_given_xpid_is_created_under_savedir(tmp_path: Path) -> None:
    path = run_dir(config(tmp_path, xpid="exp1"))
    assert path == tmp_path / "runs" / "exp1" and path.is_dir()


def _exit_message(cfg: Config, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_dir(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line
    return err


def test_resume_without_xpid_exits_2_asking_for_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "--resume needs --xpid" in _exit_message(config(tmp_path, resume=True), capsys)


def test_resume_of_a_run_without_checkpoint_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _exit_message(config(tmp_path, resume=True, xpid="missing"), capsys)
    assert "nothing to resume" in err and "missing" in err


def test_resume_returns_the_existing_run_folder(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "exp1"
    folder.mkdir(parents=True)
    (folder / CHECKPOINT_NAME).write_bytes(b"x")
    assert run_dir(config(tmp_path, resume=True, xpid="exp1")) == folder


@pytest.mark.parametrize("marker", [CHECKPOINT_NAME, "logs.csv"])
def test_a_new_run_into_an_existing_runs_folder_exits_2_instead_of_overwriting_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], marker: str
) -> None:
    folder = tmp_path / "runs" / "exp1"
    folder.mkdir(parents=True)
    (folder / marker).write_bytes(b"x")
    err = _exit_message(config(tmp_path, xpid="exp1"), capsys)
    assert "already holds a run" in err and "--resume" in err
    assert (folder / marker).read_bytes() == b"x"


def test_an_xpid_with_a_slash_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "plain folder name" in _exit_message(config(tmp_path, xpid="../elsewhere"), capsys)
