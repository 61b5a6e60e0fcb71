"""The torch device a run uses, from `--device`: one place for the `auto` rule and the user-facing errors."""

from __future__ import annotations

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
