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


# What differs per built-in scenario, as overrides of `Config`'s defaults; a flag on the command line overrides
# its entry. Why each entry is there:
#   reward_scale     the model reads the previous step's training reward, clamped to [-1, 1]: the scale makes one
#                    step's reward O(0.1) (PopArt normalises the values whatever the scale);
#   frame_skip, unroll_length, batch_size, learning_rate   basic's episodes are a few seconds long: 8 tics a step
#                    and small batches give ~400 learner steps in its 400k-frame budget;
#   reward_mode, curriculum_threshold, eval_interval_frames   deadly_corridor: on its own reward every run we made
#                    collapsed onto running forward (docs/training.md); the write-up's shaping pays for hits and
#                    kills, and the curriculum starts at skill 1, where a new agent lives long enough to learn them,
#                    and climbs as the evaluations (every 250k frames) succeed. Together they reach the vest at
#                    skill 5 in 26 of 30 episodes after 2M frames.
SCENARIO_SPECS: dict[str, dict[str, object]] = {
    "basic": {
        "reward_scale": 0.01,
        "frame_skip": 8,
        "unroll_length": 16,
        "batch_size": 8,
        "learning_rate": 1e-3,
    },
    "deadly_corridor": {
        "reward_mode": "shaped",
        "reward_scale": 0.1,
        "curriculum_threshold": 0.5,
        "eval_interval_frames": 250_000,
    },
    "defend_the_center": {"reward_scale": 1.0},
    "defend_the_line": {"reward_scale": 1.0},
    "health_gathering": {"reward_scale": 0.01},
    "health_gathering_supreme": {"reward_scale": 0.01},
    "my_way_home": {"reward_scale": 1.0},
    "predict_position": {"reward_scale": 1.0},
    "take_cover": {"reward_scale": 0.01},
    "rocket_basic": {"reward_scale": 0.01, "frame_skip": 8},
}


def scenario_spec(name_or_cfg: str) -> dict[str, object]:
    """The overrides for a scenario: its entry in `SCENARIO_SPECS`, or none for a .cfg path or an unlisted name."""
    return dict(SCENARIO_SPECS.get(name_or_cfg, {}))
