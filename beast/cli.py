"""The command line, derived field by field from `Config` so that no flag or default is defined twice."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

from beast.config import CONFIG_NAME, Config, ConfigError, config_sections, flag_name
from beast.envs.scenarios import SCENARIO_SPECS
from beast.envs.tasks import run_spec


class _Parser(argparse.ArgumentParser):
    """A mistake is one line naming it and where to look, not the usage block of 80 flags above it."""

    def error(self, message: str) -> typing.NoReturn:
        fail(f"{message} (run.py --help lists every flag)")


def build_parser() -> argparse.ArgumentParser:
    """Flags without argparse defaults (`SUPPRESS`), so that the namespace holds exactly the flags given: those
    override the scenario's spec, which overrides `Config`'s defaults. The help shows each default."""
    parser = _Parser(
        prog="run.py",
        description="beast: an IMPALA trainer for multimodal ViZDoom agents. Defaults marked [per scenario] are "
        "overridden by the scenario's entry in beast/envs/scenarios.py (SCENARIO_SPECS); a flag overrides both.",
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,
    )
    hints = typing.get_type_hints(Config)
    per_scenario = {key for spec in SCENARIO_SPECS.values() for key in spec}
    fields = {f.name: f for f in dataclasses.fields(Config)}
    for section, names in config_sections().items():
        group = parser.add_argument_group(section)
        for name in names:
            _add_flag(group, fields[name], hints[name], name in per_scenario)
    return parser


def _add_flag(group: typing.Any, f: dataclasses.Field[typing.Any], kind: type, per_scenario: bool) -> None:
    """One flag of `Config` field `f` in its section's group; the help shows the default."""
    marker = " [per scenario]" if per_scenario else ""
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
    group.add_argument(flag_name(f.name), **kwargs)


def parse_config(argv: Sequence[str] | None = None) -> Config:
    """Parse flags into a validated Config: defaults, then the scenario's spec, then the flags given; with
    `--resume`, the run's own config.json instead of the first two. A bad flag or value exits 2 with one line
    naming it."""
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    try:
        saved = saved_run_settings(given)
        cfg = resolve_config(given) if saved is None else resumed_config(saved, given)
        cfg.validate()
    except ConfigError as err:
        parser.error(str(err))
    return cfg


def resolve_config(given: dict[str, typing.Any]) -> Config:
    """`Config` defaults, overridden by the spec of the scenario named in `given` (or the default scenario; for
    several, `tasks.run_spec`), then by `given` itself. An unknown key in the spec raises ConfigError naming it."""
    scenario = given.get("scenario", Config.scenario)
    spec = run_spec(scenario)
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(
            f"the spec of scenario {scenario!r} sets {', '.join(unknown)}, which no flag has; "
            "fix its entry in beast/envs/scenarios.py (SCENARIO_SPECS)."
        )
    return Config(**{**spec, **given})


def saved_run_settings(given: dict[str, typing.Any]) -> dict[str, typing.Any] | None:
    """The settings in SAVEDIR/XPID/config.json of the run `--resume --xpid` names; None when not resuming, or
    when there is no such file (the run folder's own checks then say what is missing)."""
    if not given.get("resume") or not given.get("xpid"):
        return None
    path = Path(given.get("savedir", Config.savedir)).expanduser() / given["xpid"] / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{path} is unreadable ({err}); restore it or delete it to resume on the flags alone."
        ) from err
    if not isinstance(saved, dict):
        raise ConfigError(f"{path} holds no settings object; restore it or delete it to resume on the flags alone.")
    return saved


def resumed_config(saved: dict[str, typing.Any], given: dict[str, typing.Any]) -> Config:
    """The run's saved settings, overridden by the flags given; each flag that changes one is printed, so a
    resumed run never differs from the one it continues without saying so."""
    base = Config.from_dict(saved).to_dict()
    changed = [
        f"{flag_name(key)} {base[key]!r} -> {value!r}"
        for key, value in given.items()
        if key != "resume" and base[key] != value
    ]
    print(
        f"run.py: resuming with the settings in {CONFIG_NAME}"
        + (f"; changed by flags: {', '.join(changed)}" if changed else ""),
        file=sys.stderr,
    )
    return Config(**{**base, **given})


def fail(message: str) -> typing.NoReturn:
    """Stop on a user-fixable problem: one line saying what is wrong and what to do, exit status 2."""
    print(f"run.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)
