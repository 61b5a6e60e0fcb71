"""The torch device a run uses, from `--device`, and its host threads: one place for the `auto` rules and the
user-facing errors."""

from __future__ import annotations

import os

import torch

from beast.cli import fail


def resolve_device(name: str) -> torch.device:
    """`auto` is cuda when available, else cpu; a device that does not exist is a user error (exit 2)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        fail(f"--device={name!r} is not a torch device; use auto, cpu, cuda or cuda:N.")
    if device.type == "cuda" and not torch.cuda.is_available():
        fail(f"--device={name}: CUDA is not available here; use --device=cpu or auto.")
    return device


def intra_op_threads(num_threads: int, device: torch.device) -> int | None:
    """The torch intra-op threads a run sets: `--num-threads` when given; 0 (auto): on the CPU half the cores, at
    least one, unless the launcher chose (OMP_NUM_THREADS, which torchrun sets to 1 per rank); None: leave torch's.

    Why half on the CPU: the batcher's forward passes and the learner's steps run at the same time, each on an
    intra-op pool of this size, beside the engines. torch's own default, one thread per core for each, made them
    contend for the cores: on 2 cores one thread each trained 30% faster than torch's two (docs/benchmarks.md,
    "Torch threads"). On a GPU the host threads only feed the device: torch's default is kept.
    """
    if num_threads > 0:
        return num_threads
    if device.type != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, (os.cpu_count() or 1) // 2)


def set_intra_op_threads(num_threads: int, device: torch.device) -> None:
    """Apply `intra_op_threads` to this process."""
    threads = intra_op_threads(num_threads, device)
    if threads is not None:
        torch.set_num_threads(threads)
