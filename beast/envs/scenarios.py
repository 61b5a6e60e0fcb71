"""Built-in ViZDoom scenarios: names <-> .cfg files of the installed `vizdoom` wheel.

The env server drives the engine binary shipped in the wheel, so the wheel's package folder is also where the
scenario files, freedoom2.wad and the `vizdoom` binary live. It is found without importing vizdoom (the import
loads the Python binding, which the trainer never needs).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from beast.cpu import native_bf16_cpu


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
#   total_frames     each scenario's training budget: what `--mode=train --scenario NAME` runs and what
#                    docs/training.md measured (the learning rate decays to zero over it);
#   reward_scale     the model reads the previous step's training reward, clamped to [-1, 1]: the scale makes one
#                    step's reward O(0.1) (PopArt normalises the values whatever the scale);
#   unroll_length, batch_size, learning_rate   (_SMALL_BATCHES) the short scenarios are learned in a few minutes of
#                    two CPU cores: 128-sample batches give ~1,000 learner steps in 500k frames, where the default
#                    4,096-frame batches gave 74 in 300k and learned none of them (docs/training.md);
#   frame_skip       basic and rocket_basic: episodes of a few seconds, 8 tics a step;
#   lr_warmup_frames basic and rocket_basic: at 1e-3, Adam's first steps could leave the vision blind for good (why:
#                    `beast.learn.optim.LinearDecay`); on health_gathering it did not pay, so the other small-batch
#                    scenarios have none (docs/training.md, "Adam's first steps, and a blind agent");
#   health_potential_coef   the survival scenarios (health_gathering, its supreme version, take_cover) pay +1 a tic
#                    alive: a medkit or a dodged fireball pays only through a later death. The potential term
#                    gamma*H(s') - H(s) of the HEALTH variable pays them at once and, being a potential, leaves
#                    the optimal policy alone (beast/envs/shaping.py). health_gathering and take_cover learn in
#                    1.5M frames (at 500k their curves had not left random's);
#   reward_mode, curriculum_threshold, eval_interval_frames   deadly_corridor: on its own reward every run we made
#                    collapsed onto running forward (docs/training.md); the write-up's shaping pays for hits and
#                    kills, and the curriculum starts at skill 1, where a new agent lives long enough to learn them,
#                    and climbs as the evaluations (every 250k frames) succeed. Together they reach the vest at
#                    skill 5 in 29 of 30 episodes after 45 minutes;
#   num_servers      deadly_corridor: two servers of 8 games, not one. While one server's games step, the batcher
#                    runs the other's inference; with one, the engines wait for every batch: ~29% more frames/s
#                    (docs/benchmarks.md, "Two servers"). The short scenarios were measured on one and keep it.
#   envs_per_server  deadly_corridor on a CPU with native bf16, where the learner runs in bf16 and waits for
#                    rollouts: 16 games a server, whose engines step while the batcher's forward runs (+11% frames/s
#                    on a 2-core AVX512-BF16 EPYC, +16% on another; docs/benchmarks.md, "32 games on a CPU with
#                    native bf16"). Elsewhere the fp32 learner is the limit and more games only take CPU from it
#                    (-8% on an AVX2 EPYC): 8.
_SMALL_BATCHES: dict[str, object] = {"unroll_length": 16, "batch_size": 8, "learning_rate": 1e-3}
_SHORT_EPISODES: dict[str, object] = {
    **_SMALL_BATCHES,
    "frame_skip": 8,
    "total_frames": 400_000,
    "reward_scale": 0.01,
    "lr_warmup_frames": 50_000,
}
_SURVIVAL: dict[str, object] = {
    **_SMALL_BATCHES,
    "total_frames": 500_000,
    "reward_scale": 0.01,
    "health_potential_coef": 1.0,
}
SCENARIO_SPECS: dict[str, dict[str, object]] = {
    "basic": _SHORT_EPISODES,
    "rocket_basic": _SHORT_EPISODES,
    "deadly_corridor": {
        "reward_mode": "shaped",
        "reward_scale": 0.1,
        "curriculum_threshold": 0.5,
        "eval_interval_frames": 250_000,
        "num_servers": 2,
        "envs_per_server": 16 if native_bf16_cpu() else 8,
    },
    "defend_the_center": {**_SMALL_BATCHES, "total_frames": 500_000, "reward_scale": 1.0},
    "defend_the_line": {**_SMALL_BATCHES, "total_frames": 500_000, "reward_scale": 1.0},
    "health_gathering": {**_SURVIVAL, "total_frames": 1_500_000},
    "health_gathering_supreme": _SURVIVAL,
    "my_way_home": {**_SMALL_BATCHES, "total_frames": 500_000, "reward_scale": 1.0},
    "predict_position": {**_SMALL_BATCHES, "total_frames": 500_000, "reward_scale": 1.0},
    "take_cover": {**_SURVIVAL, "total_frames": 1_500_000},
}


def scenario_spec(name_or_cfg: str) -> dict[str, object]:
    """The overrides for a scenario: its entry in `SCENARIO_SPECS`, or none for a .cfg path or an unlisted name."""
    return dict(SCENARIO_SPECS.get(name_or_cfg, {}))
