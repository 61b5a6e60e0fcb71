"""The acting step the batcher and the evaluation share: what a server's results become as the model's next input.

Both play envs one step at a time and must show the model the same thing the learner trains it on: the
observation, whether it begins an episode (`done`), and the training reward of the step that led to it, as the
shaper computes it. The last action is passed as it was; where `done` is set the model reads its start token
instead (`beast.model`), so no caller applies that rule itself. A RESET's first observations count as episode
starts with reward 0.

An episode "reached its goal" when it ended on its own: not by the scenario's timeout, not by an engine crash, and
with HEALTH > 0 at the end (deadly_corridor: the vest; basic: the kill). The batcher's success rate and the
evaluations' `reached_goal` both use `reached_goal` below.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from beast.envs.shaping import RewardShaper, TaskRewards

OBS_KEYS = ("rgb", "depth", "enemy", "audio")


def transition(
    shaper: RewardShaper | TaskRewards, env_ids: np.ndarray, results: Mapping[str, np.ndarray], reset: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`done`, `truncated` and the training reward [n] of the steps whose results (envs `env_ids`) are in hand;
    `reset`: the results are RESET's first observations."""
    n = len(env_ids)
    if reset:
        shaper.reset(env_ids, results["vars"])
        return np.ones(n, dtype=bool), np.zeros(n, dtype=bool), np.zeros(n, dtype=np.float32)
    done, truncated = results["done"].astype(bool), results["truncated"].astype(bool)
    reward = shaper.step(env_ids, results["vars"], results["reward"], done, truncated, results["final_vars"])
    return done, truncated, reward


def model_inputs(
    obs: Mapping[str, np.ndarray],
    done: np.ndarray,
    reward: np.ndarray,
    last_action: np.ndarray,
    device: torch.device,
    task: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """The model's inputs [T=1, n, ...] on `device`; `task` [n] int64, each env's task, for a multi-task model. The
    observation arrays must be writable (torch refuses the client's read-only views without a warning): pass
    copies."""
    rows = {**{key: obs[key] for key in OBS_KEYS}, "done": done, "reward": reward, "last_action": last_action}
    if task is not None:
        rows["task"] = task
    # [None] adds T=1 as a numpy view, cheaper than torch's unsqueeze; on the CPU `.to` would be a no-op call.
    inputs = {key: torch.from_numpy(value[None]) for key, value in rows.items()}
    if device.type != "cpu":
        inputs = {key: value.to(device, non_blocking=True) for key, value in inputs.items()}
    return inputs


def reached_goal(truncated: np.ndarray, crashed: np.ndarray, final_health: np.ndarray) -> np.ndarray:
    """Per ended episode: it ended on its own (no timeout, no crash) with the player alive."""
    return ~truncated.astype(bool) & ~crashed.astype(bool) & (final_health > 0)
