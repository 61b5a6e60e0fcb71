"""The command line, derived field by field from `Config` so that no flag or default is defined twice."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Sequence

from beast.config import Config, ConfigError, flag_name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="beast: an IMPALA trainer for multimodal ViZDoom agents.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        kind = hints[f.name]
        kwargs: dict[str, typing.Any] = {"default": f.default, "help": f.metadata["help"], "dest": f.name}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            kwargs["metavar"] = f.name.upper()
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
                kwargs.pop("metavar")
        parser.add_argument(flag_name(f.name), **kwargs)
    return parser


def parse_config(argv: Sequence[str] | None = None) -> Config:
    """Parse flags into a validated Config; a bad flag or value exits 2 with a message naming it."""
    parser = build_parser()
    namespace = parser.parse_args(argv)
    cfg = Config(**vars(namespace))
    try:
        cfg.validate()
    except ConfigError as err:
        parser.error(str(err))
    return cfg


def fail(message: str) -> typing.NoReturn:
    """Stop on a user-fixable problem: one line saying what is wrong and what to do, exit status 2."""
    print(f"run.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)
