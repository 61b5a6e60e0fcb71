"""The learner's arithmetic: `--precision` resolved for a device.

Under bf16 autocast the learner's forward and backward run the organs' convolutions and the core's projections in
bfloat16 (float32 accumulation): that is where a learner step's time goes (convolutions alone are 63% of it on
the CPU). It pays only where the hardware computes bf16 natively: on a CPU with AVX512-BF16 (or AMX) a learner
step of T=32 x B=32 takes half the time (0.83 -> 0.41 s on the 2-core dev box, docs/benchmarks.md, "Precision");
elsewhere the same kernels are emulated and slower. What must stay exact stays float32 whatever this says: the
SSD scan and its decays, the norms' statistics, the policy and critic heads (the logits that give log pi, the
value layer PopArt rescales), the weights, the optimiser and every loss.

The compiled acting forward (`beast.runtime.weights.CompiledActing`, the batcher's on the CPU) runs under the
same autocast, so the behaviour policy and the learner's target policy share one arithmetic; compiled, bf16 was
the faster at every batch size the batcher gives it (26 envs: 5.0 against 7.9 ms). Eager acting (a GPU,
`--no-compile-acting`, evaluation) stays float32: there autocast casts every weight on every call, which at a few
envs costs more than bf16 saves (8 envs: 6.4 ms under bf16 autocast vs 5.8 ms in float32); its policy and the
learner's differ by the rounding, an off-policy gap of well under the policy lag's that V-trace corrects.
"""

from __future__ import annotations

import torch

from beast.cpu import native_bf16_cpu


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The learner's autocast dtype on `device` for `--precision` (auto, fp32, bf16); None: no autocast, the
    parameters' own dtype. auto is bf16 on a CPU with native bf16, where it was measured, and fp32 elsewhere, a
    GPU included, until it is measured there (`--precision bf16` runs it). bf16 without hardware support is slow,
    not wrong."""
    if precision == "bf16" or (precision == "auto" and device.type == "cpu" and native_bf16_cpu()):
        return torch.bfloat16
    return None


def autocast_to(dtype: torch.dtype | None, device_type: str) -> torch.autocast:
    """Autocast to `dtype` on `device_type`, or a disabled one for None (the parameters' own dtype)."""
    return torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def learner_autocast(precision: str, device: torch.device) -> torch.autocast:
    """The context the learner's forward runs in: `autocast_dtype`'s autocast, or a disabled one."""
    return autocast_to(autocast_dtype(precision, device), device.type)
