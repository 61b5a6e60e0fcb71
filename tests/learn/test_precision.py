"""`--precision`: which devices the learner runs under bf16 autocast on."""

from __future__ import annotations

import pytest
import torch

import beast.cpu
from beast.learn import precision


@pytest.mark.parametrize(
    ("flags", "native"),
    [({"avx2", "avx512f", "avx512bw"}, False), ({"avx512f", "avx512_bf16"}, True), ({"amx_bf16", "amx_tile"}, True)],
)
def test_auto_is_bf16_only_on_a_cpu_with_native_bf16(monkeypatch, flags, native) -> None:
    monkeypatch.setattr(beast.cpu, "cpu_flags", lambda: frozenset(flags))
    cpu = torch.device("cpu")
    assert precision.autocast_dtype("auto", cpu) == (torch.bfloat16 if native else None)
    assert precision.autocast_dtype("bf16", cpu) == torch.bfloat16  # forced: emulated where not native
    assert precision.autocast_dtype("fp32", cpu) is None
    assert precision.autocast_dtype("auto", torch.device("cuda")) is None  # not measured on a GPU yet
