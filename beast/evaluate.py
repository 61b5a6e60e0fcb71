"""`run.py --mode=test`: checkpoint evaluation and GIF recording land with the trainer issue."""

from __future__ import annotations

from beast.cli import fail
from beast.config import Config


def main(cfg: Config) -> int:
    fail(
        "--mode=test is not available yet: evaluation needs the trainer's checkpoints, the next piece of work; "
        "--mode=bench runs today."
    )
