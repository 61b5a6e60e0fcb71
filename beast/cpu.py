"""What this machine's CPU computes natively, read from Linux's /proc/cpuinfo without importing torch: the
learner's precision (`beast.learn.precision`) and deadly_corridor's game count (`beast.envs.scenarios`) follow
it."""

from __future__ import annotations

import functools
from pathlib import Path

# CPU flags of native bf16 arithmetic: AVX512-BF16's dot products, AMX's tiles.
NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The instruction-set flags of this machine's first CPU (empty where /proc/cpuinfo is absent)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def native_bf16_cpu() -> bool:
    """Whether this machine's CPU computes bf16 in hardware (AVX512-BF16 or AMX)."""
    return bool(cpu_flags() & NATIVE_BF16_CPU_FLAGS)
