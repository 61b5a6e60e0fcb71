"""The command line, derived field by field from `Config` so that no flag or default is defined twice."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Sequence

from beast.config import Config, ConfigError, flag_name
from beast.envs.scenarios import SCENARIO_SPECS, scenario_spec


def build_parser() -> argparse.ArgumentParser:
    """Flags without argparse defaults (`SUPPRESS`), so that the namespace holds exactly the flags given: those
    override the scenario's spec, which overrides `Config`'s defaults. The help shows each default."""
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="beast: an IMPALA trainer for multimodal ViZDoom agents. Defaults marked [per scenario] are "
        "overridden by the scenario's entry in beast/envs/scenarios.py (SCENARIO_SPECS); a flag overrides both.",
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,
    )
    hints = typing.get_type_hints(Config)
    per_scenario = {key for spec in SCENARIO_SPECS.values() for key in spec}
    for f in dataclasses.fields(Config):
        kind = hints[f.name]
        marker = " [per scenario]" if f.name in per_scenario else ""
        help_text = f"{f.metadata['help']} (default: {f.default}){marker}".replace("%", "%%")
        kwargs: dict[str, typing.Any] = {"help": help_text, "dest": f.name}
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
    """Parse flags into a validated Config: defaults, then the scenario's spec, then the flags given. A bad flag
    or value exits 2 with a message naming it."""
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    try:
        cfg = resolve_config(given)
        cfg.validate()
    except ConfigError as err:
        parser.error(str(err))
    return cfg


def resolve_config(given: dict[str, typing.Any]) -> Config:
    """`Config` defaults, overridden by the spec of the scenario named in `given` (or the default scenario), then
    by `given` itself. An unknown key in the spec raises ConfigError naming it."""
    scenario = given.get("scenario", Config.scenario)
    spec = scenario_spec(scenario)
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(
            f"the spec of scenario {scenario!r} sets {', '.join(unknown)}, which no flag has; "
            "fix its entry in beast/envs/scenarios.py (SCENARIO_SPECS)."
        )
    return Config(**{**spec, **given})


def fail(message: str) -> typing.NoReturn:
    """Stop on a user-fixable problem: one line saying what is wrong and what to do, exit status 2."""
    print(f"run.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)
