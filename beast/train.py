"""`run.py --mode=train`: the trainer (batcher, buffer pool, learner thread) lands with the trainer issue."""

from __future__ import annotations

from beast.cli import fail
from beast.config import Config


def main(cfg: Config) -> int:
    fail(
        "--mode=train is not available yet: the trainer (dynamic batcher, buffer pool, learner thread) is the "
        "next piece of work; --mode=bench runs today."
    )
