"""`--device`: the auto rule, and devices that cannot be used are user errors (exit 2), not tracebacks; the torch
threads' auto rule."""

from __future__ import annotations

import os

import pytest
import torch

from beast.device import intra_op_threads, resolve_device


def test_auto_picks_cuda_only_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whether CUDA is present is mocked both ways: CI has no GPU, and this must hold on a GPU box too.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_cuda_without_a_gpu_and_unknown_devices_exit_2(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name, needle in (("cuda:0", "CUDA is not available"), ("quantum", "not a torch device")):
        with pytest.raises(SystemExit) as exit_info:
            resolve_device(name)
        assert exit_info.value.code == 2
        assert needle in capsys.readouterr().err
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 1), (3, 1), (16, 8)])
def test_auto_threads_on_the_cpu_are_half_the_cores(monkeypatch: pytest.MonkeyPatch, cores: int, expected: int) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert intra_op_threads(0, torch.device("cpu")) == expected


def test_threads_given_win_and_a_launchers_choice_or_a_gpu_keeps_torchs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert intra_op_threads(3, torch.device("cpu")) == 3
    assert intra_op_threads(0, torch.device("cuda")) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert intra_op_threads(0, torch.device("cpu")) is None
