"""The model benchmark runs every core and reports positive throughputs, bounded by bench_seconds."""

from __future__ import annotations

import sys
import types

from beast.bench import model as bench


def test_rows_for_each_core(make_config, monkeypatch) -> None:
    monkeypatch.setattr(bench, "LEARNER_SHAPE", (4, 2))  # the logic, not the figures: keep it quick
    monkeypatch.setattr(bench, "ACTING_BATCH", 3)
    cfg = make_config(bench_seconds=0.01)
    rows = bench.run(cfg)
    names = [r.name for r in rows]
    for core in ("mamba", "lstm", "none"):
        assert any(n.startswith("learner fwd+bwd " + core) for n in names)
        assert any(n.startswith("acting " + core) for n in names)
    assert all(r.part == "model" and r.unit == "samples/s" and r.value > 0 for r in rows)


def test_stub_only_when_the_extension_is_missing(monkeypatch) -> None:
    real = types.ModuleType("selective_scan_cuda")
    monkeypatch.setitem(sys.modules, "selective_scan_cuda", real)
    assert bench.prepare_mamba_ssm_import() is False
    assert sys.modules["selective_scan_cuda"] is real
