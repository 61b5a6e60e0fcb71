"""`beast.cpu`: the CPU's flags, read from /proc/cpuinfo."""

from __future__ import annotations

import pytest

from beast import cpu


def test_cpu_flags_read_the_flags_line(tmp_path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n")
    assert cpu.cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512f", "avx512_bf16"}
    assert cpu.cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(
    ("flags", "native"),
    [({"avx2", "avx512f", "avx512bw"}, False), ({"avx512f", "avx512_bf16"}, True), ({"amx_bf16", "amx_tile"}, True)],
)
def test_native_bf16_needs_avx512_bf16_or_amx(monkeypatch, flags, native) -> None:
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags))
    assert cpu.native_bf16_cpu() is native
