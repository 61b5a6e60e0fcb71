"""Built-in ViZDoom scenarios: names <-> .cfg files of the installed `vizdoom` wheel.

The env server drives the engine binary shipped in the wheel, so the wheel's package folder is also where the
scenario files, freedoom2.wad and the `vizdoom` binary live. It is found without importing vizdoom (the import
loads the Python binding, which the trainer never needs).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


class ScenarioError(ValueError):
    """An unknown scenario name or a missing .cfg file; the message lists what exists."""


def vizdoom_dir() -> Path:
    """The installed vizdoom wheel's package folder (engine binary `vizdoom`, wads, scenarios/)."""
    spec = importlib.util.find_spec("vizdoom")
    if spec is None or not spec.submodule_search_locations:
        raise ScenarioError("the vizdoom package is not installed in this Python; run `make venv`.")
    return Path(next(iter(spec.submodule_search_locations)))


def scenario_names() -> list[str]:
    """Names accepted by `--scenario`: the stems of the wheel's scenarios/*.cfg, sorted."""
    return sorted(p.stem for p in (vizdoom_dir() / "scenarios").glob("*.cfg"))


def resolve_scenario(name_or_cfg: str) -> Path:
    """The .cfg file for a built-in name (`basic`) or an explicit path (`my/scenario.cfg`)."""
    if name_or_cfg.endswith(".cfg") or "/" in name_or_cfg:
        path = Path(name_or_cfg).expanduser().resolve()
        if not path.is_file():
            raise ScenarioError(f"scenario file {name_or_cfg!r} does not exist.")
        return path
    path = vizdoom_dir() / "scenarios" / f"{name_or_cfg}.cfg"
    if not path.is_file():
        raise ScenarioError(f"unknown scenario {name_or_cfg!r}; built-in ones: {', '.join(scenario_names())}.")
    return path
