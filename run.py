#!/usr/bin/env python3
"""Entry point: parse the flags into a Config and hand it to the mode's module."""

from __future__ import annotations

import importlib
import sys

from beast.cli import parse_config

MODES = {
    "train": "beast.train",
    "test": "beast.evaluate",
    "bench": "beast.bench",
    "plot": "beast.plots",
    "serve": "beast.serve",
}


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    module = importlib.import_module(MODES[cfg.mode])
    return int(module.main(cfg) or 0)


if __name__ == "__main__":
    sys.exit(main())
