"""`--device`: the auto rule, and devices that cannot be used are user errors (exit 2), not tracebacks."""

from __future__ import annotations

import pytest
import torch

from beast.device import resolve_device


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
