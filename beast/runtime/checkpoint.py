"""Checkpoints: model, optimiser, scheduler, counters and config in one file, written atomically.

A checkpoint holds only tensors, dicts, lists and primitives, so it loads with `torch.load(weights_only=True)`:
opening a checkpoint never runs code from it. It is written to a temporary file in the same folder, flushed and
fsynced, then renamed over the old one (`os.replace` is atomic on POSIX), so the file at `path` is always either
the previous checkpoint or the new one, whole, even if the process is interrupted or killed mid-save.

Layout (docs/usage.md, "Checkpoints"):
    {"format_version": 1, "model": state_dict, "optimizer": state_dict, "scheduler": state_dict or None,
     "counters": {name: int}, "config": Config.to_dict(), "num_actions": int}
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from beast.config import Config, flag_name
from beast.envs.tasks import task_names

CHECKPOINT_NAME = "checkpoint.pt"
BEST_CHECKPOINT_NAME = "checkpoint_best.pt"  # the weights that scored best in evaluation during training
FORMAT_VERSION = 1
REQUIRED_KEYS = ("model", "optimizer", "scheduler", "counters", "config", "num_actions")

# Settings that decide the model's parameters (names and shapes). The ones that only change how the same weights
# run (mamba_backend, mamba_chunk_size) are left out, so a GPU-trained checkpoint can be run on a CPU.
MODEL_FIELDS = (
    "core",
    "d_model",
    "d_state",
    "d_conv",
    "expand",
    "headdim",
    "action_embed_dim",
    "head_hidden",
    "normalize_input",
)
# A resumed run must also keep the optimiser, whose state (RMSProp's square averages, Adam's moments) it restores.
RESUME_FIELDS = (*MODEL_FIELDS, "optimizer")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not fit this run; the message names the file and the fix."""


def save_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    counters: dict[str, int],
    cfg: Config,
    num_actions: int,
) -> None:
    """Write the checkpoint atomically: `path` holds the old checkpoint or the new one, never a partial file.
    `optimizer` None (with `scheduler` None) writes weights to play, not to resume: the best checkpoint."""
    path = Path(path)
    payload = {
        "format_version": FORMAT_VERSION,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "counters": {str(k): int(v) for k, v in counters.items()},
        "config": cfg.to_dict(),
        "num_actions": int(num_actions),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp makes it 0600; a checkpoint is as readable as any output
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:  # KeyboardInterrupt included: leave no temp file, keep the old checkpoint
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)  # make the rename itself durable across a power loss
    _remove_stale_temps(path)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint at `path` as a dict with keys model, optimizer, scheduler, counters, config (a plain dict;
    `Config.from_dict` rebuilds it) and num_actions. Raises CheckpointError naming the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}; train first (run.py --mode=train --xpid XPID) or pass --checkpoint PATH "
            "of an existing checkpoint."
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _refused_global(str(err))
        if refused is None:  # not a pickle/zip at all: torch's weights-only unpickler reports garbage this way
            raise _corrupt(path, err) from err
        raise CheckpointError(
            f"{path} holds an object a weights-only load refuses ({refused}); beast checkpoints hold only tensors "
            "and plain values, so this file was not written by beast: use a checkpoint from run.py --mode=train."
        ) from err
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise _corrupt(path, err) from err
    if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED_KEYS):
        have = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path} is not a beast checkpoint (it has {have}, expected {', '.join(REQUIRED_KEYS)}); "
            "pass a checkpoint written by run.py --mode=train."
        )
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version}, this beast reads format {FORMAT_VERSION}; "
            "evaluate it with the beast version that wrote it, or train again."
        )
    return payload


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint of the run in `run_dir`, or None. A run keeps one file, replaced at every save."""
    path = Path(run_dir) / CHECKPOINT_NAME
    return path if path.is_file() else None


def check_config(saved: dict[str, Any], cfg: Config, path: Path, fields: tuple[str, ...] = RESUME_FIELDS) -> None:
    """Raise CheckpointError if `cfg` differs from the checkpoint's config `saved` in any of `fields`.

    `--resume` uses this with RESUME_FIELDS: a resumed run must be started with the model and optimiser flags it
    was trained with, and the message names the first flag that differs; a multi-task run, with its task list.
    (`--mode=test` needs no check: it builds the model from the checkpoint's own config.)"""
    for name in fields:
        if name in saved and saved[name] != getattr(cfg, name):
            raise CheckpointError(
                f"{flag_name(name)}={getattr(cfg, name)!r} differs from {saved[name]!r} in {path}; resume with the "
                f"settings the run was trained with ({flag_name(name)}={saved[name]}; see config.json beside it)."
            )
    trained, now = task_names(str(saved.get("scenario", cfg.scenario))), task_names(cfg.scenario)
    if (len(trained) > 1 or len(now) > 1) and trained != now:
        raise CheckpointError(
            f"--scenario={cfg.scenario!r} differs from {saved['scenario']!r} in {path}: a multi-task model's value "
            f"heads and task ids follow its list of tasks; resume with --scenario={saved['scenario']}."
        )


def _refused_global(message: str) -> str | None:
    """The class or function a weights-only load refused, from torch's message, or None if it refused none."""
    for line in message.splitlines():
        if "GLOBAL" in line:
            return line.strip().rstrip(".")
    return None


def _corrupt(path: Path, err: BaseException) -> CheckpointError:
    if isinstance(err, pickle.UnpicklingError):
        detail = "not a torch checkpoint file"
    else:
        detail = str(err).strip().splitlines()[0][:120] if str(err).strip() else "unexpected end of file"
    return CheckpointError(
        f"{path} is corrupt or truncated ({type(err).__name__}: {detail}); use another checkpoint, or delete it "
        "and train again."
    )


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_stale_temps(path: Path) -> None:
    """Temp files of saves killed by SIGKILL or a power loss (the only way one survives) are garbage."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()
