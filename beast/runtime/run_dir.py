"""The run directory SAVEDIR/XPID: where a training run keeps its checkpoint, logs and config.

Two mistakes cost a run, and both are refused here: `--resume` without saying which run (an empty xpid would
otherwise mean a fresh timestamped one, silently starting over), and a new run pointed at a folder that already
holds one (which would overwrite its checkpoint and interleave its logs).
"""

from __future__ import annotations

import time
from pathlib import Path

from beast.cli import fail
from beast.config import Config
from beast.runtime.checkpoint import CHECKPOINT_NAME

# Files whose presence means a folder already holds a run.
RUN_MARKERS = (CHECKPOINT_NAME, "logs.csv")


def run_dir(cfg: Config) -> Path:
    """SAVEDIR/XPID, created. An empty xpid becomes a timestamp (`20261121-013000`, suffixed `-2`, `-3`... if that
    folder exists). Call it once per run and pass the path along: a second call with an empty xpid gives a new
    folder. Exits 2 (`fail`) on --resume without --xpid or without a run to resume, and on a new run into an
    existing run's folder."""
    savedir = Path(cfg.savedir).expanduser()
    if cfg.xpid and ("/" in cfg.xpid or cfg.xpid in (".", "..")):
        fail(f"--xpid={cfg.xpid!r} must be a plain folder name (no '/'); it names SAVEDIR/XPID.")
    if cfg.resume:
        if not cfg.xpid:
            fail("--resume needs --xpid: the id of the run in --savedir to continue (its folder name).")
        path = savedir / cfg.xpid
        if not (path / CHECKPOINT_NAME).is_file():
            fail(
                f"nothing to resume: {path / CHECKPOINT_NAME} does not exist; check --savedir and --xpid, or drop "
                "--resume and start a new run under another --xpid."
            )
        return path
    if not cfg.xpid:
        return _fresh_timestamped(savedir)
    path = savedir / cfg.xpid
    existing = [name for name in RUN_MARKERS if (path / name).exists()]
    if existing:
        fail(
            f"{path} already holds a run ({', '.join(existing)}); pass --resume to continue it, choose another "
            "--xpid, or delete that folder."
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fresh_timestamped(savedir: Path) -> Path:
    """A new folder named by the local time; `mkdir(exist_ok=False)` makes two runs started together distinct."""
    savedir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        path = savedir / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    fail(f"could not create a fresh run folder in {savedir} (1000 named {stamp}-N exist); pass --xpid.")
