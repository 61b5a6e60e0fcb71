"""A two-task run's envs with real servers: each server plays its task's scenario with its own settings, every
rollout carries its env's task, the masked policy only takes its task's buttons (which reach the server as that
scenario's own indices), and a restarted server's envs keep their task."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from beast.envs.scenarios import ScenarioError, resolve_scenario
from beast.envs.tasks import task_configs
from beast.model import build_model
from beast.runtime.weights import ModelPolicy, PolicyWeights
from tests.runtime.conftest import play_rollouts

SUITE = "basic,defend_the_center"


def test_rollouts_carry_their_envs_task_through_a_server_restart(small_cfg, env_set, batcher_factory) -> None:
    cfg = dataclasses.replace(small_cfg, scenario=SUITE, envs_per_server=2)
    envs, first = env_set(cfg)
    assert [Path(s.client.info.scenario).stem for s in envs.slots] == ["basic", "defend_the_center"]
    assert [s.client.info.frame_skip for s in envs.slots] == [t.frame_skip for t in task_configs(cfg)] == [8, 4]
    assert envs.env_task.tolist() == [0, 0, 1, 1]
    space = envs.actions
    assert space is not None and not space.available.all()
    model = build_model(cfg, space.num_actions, space.available)
    policy = ModelPolicy(PolicyWeights(model), cfg, lambda: 0)
    batcher, pool, stop = batcher_factory(cfg, envs, first, policy, model.initial_state(1))
    victim = envs.slots[1]
    old_pid = victim.local.pid

    seen: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (env, task column, action column)
    killed = False

    def take(env: int, _: int, batch: dict) -> bool:
        nonlocal killed
        seen.append((env, batch["task"][:, 0].clone(), batch["action"][:, 0].clone()))
        if not killed and len(seen) >= 8:
            os.kill(old_pid, signal.SIGKILL)
            killed = True
        after = [e for e, _, _ in seen[8:] if e in (2, 3)]
        return killed and victim.up and after.count(2) >= 2 and after.count(3) >= 2

    play_rollouts(batcher, pool, stop, take, timeout_s=60.0)
    assert killed and victim.local.pid != old_pid
    assert envs.env_task.tolist() == [0, 0, 1, 1]
    for env, task, actions in seen:
        assert (task == envs.env_task[env]).all(), (env, task)
        assert space.available[int(task[0])][actions.numpy()].all(), (env, actions)
    assert {e for e, _, _ in seen} == {0, 1, 2, 3}
    # Each task's episodes are kept apart, under its own name.
    stats = batcher.episode_stats()
    assert "basic/mean_return" in stats and "defend_the_center/mean_return" in stats and "suite_score" in stats
    # Frames are counted at each task's own frame skip, and add up to the run's.
    assert stats["basic/env_frames"] % 8 == 0 and stats["defend_the_center/env_frames"] > 0
    assert stats["basic/env_frames"] + stats["defend_the_center/env_frames"] == batcher.frames


def _own_scenario(folder: Path, extra_button: str) -> Path:
    """basic.cfg as a .cfg of one's own, with one more button, beside a copy of its wad."""
    source = resolve_scenario("basic")
    shutil.copy(source.with_suffix(".wad"), folder / "basic.wad")
    text = source.read_text().replace("        ATTACK\n", f"        ATTACK\n        {extra_button}\n")
    path = folder / "mine.cfg"
    path.write_text(text)
    return path


def test_a_cfg_task_inside_the_communal_space_plays_and_one_outside_is_refused_by_button(
    small_cfg, env_set, tmp_path: Path
) -> None:
    inside = _own_scenario(tmp_path, "TURN_LEFT")
    envs, _ = env_set(dataclasses.replace(small_cfg, scenario=f"defend_the_center,{inside}", envs_per_server=1))
    assert envs.actions is not None
    assert envs.actions.available[1].tolist() == [True, True, True, False, False, True, False]

    outside = _own_scenario(tmp_path, "SPEED")
    with pytest.raises(ScenarioError, match="SPEED"):
        env_set(dataclasses.replace(small_cfg, scenario=f"defend_the_center,{outside}", envs_per_server=1))
