"""The last 100 finished training episodes: what the progress view and the logs report as the training return.

An episode cut short by an engine crash is not a result and is left out. Success is `acting.reached_goal`, as in
the evaluations; kills are KILLCOUNT at the end (None where the scenario has no such variable). A multi-task run
keeps each task's last 100 as well, and scores them against the task's random and reference returns.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Mapping, Sequence

import numpy as np

from beast.envs.tasks import suite_score, task_label, task_score
from beast.runtime.acting import reached_goal

EPISODE_WINDOW = 100


class EpisodeLog:
    """Written by the batcher's thread, read by the trainer's (`stats` and `episodes` are safe from any thread)."""

    def __init__(self, var_names: Sequence[str]) -> None:
        self._kill_col = var_names.index("KILLCOUNT") if "KILLCOUNT" in var_names else None
        self._health_col = var_names.index("HEALTH") if "HEALTH" in var_names else None
        # (return, length, kills, success) per finished episode
        self._log: collections.deque[tuple[float, int, float, float]] = collections.deque(maxlen=EPISODE_WINDOW)
        self._lock = threading.Lock()
        self.episodes = 0

    def record(self, results: Mapping[str, np.ndarray], ended: np.ndarray, truncated: np.ndarray) -> None:
        """The episodes that ended (`ended` [n]) among a batch's results [n, ...]."""
        final = results["final_vars"][ended]
        crashed = results["crashed"][ended].astype(bool)
        n = len(final)
        kills = final[:, self._kill_col] if self._kill_col is not None else np.full(n, np.nan)
        success = (
            np.full(n, np.nan)
            if self._health_col is None
            else reached_goal(truncated[ended], crashed, final[:, self._health_col]).astype(np.float64)
        )
        finished = ~crashed
        rows = zip(
            results["episode_return"][ended][finished],
            results["episode_length"][ended][finished],
            kills[finished],
            success[finished],
            strict=True,
        )
        with self._lock:
            for ret, length, k, won in rows:
                self._log.append((float(ret), int(length), float(k), float(won)))
            self.episodes += int(finished.sum())

    def stats(self) -> dict[str, float | None]:
        """Mean return, length, kills and success rate over the window (None before the first episode)."""
        with self._lock:
            log = list(self._log)
        if not log:
            return {"mean_return": None, "mean_length": None, "mean_kills": None, "success_rate": None}
        returns, lengths, kills, success = (np.array(column, dtype=np.float64) for column in zip(*log, strict=True))
        return {
            "mean_return": float(returns.mean()),
            "mean_length": float(lengths.mean()),
            "mean_kills": None if np.isnan(kills).all() else float(np.nanmean(kills)),
            "success_rate": None if np.isnan(success).all() else float(np.nanmean(success)),
        }


class TaskEpisodeLogs:
    """Every task's episodes together (`mean_return`, ...) and, in a multi-task run, each task's apart
    (`<task>/mean_return`, ..., `<task>/score`) with the suite score (`tasks.suite_score`)."""

    def __init__(self, var_names: Sequence[str], names: Sequence[str], env_task: np.ndarray) -> None:
        self.all = EpisodeLog(var_names)
        self.names = list(names)
        self.env_task = env_task
        self.tasks = [EpisodeLog(var_names) for _ in names] if len(names) > 1 else []

    @property
    def episodes(self) -> int:
        return self.all.episodes

    def record(
        self, results: Mapping[str, np.ndarray], ended: np.ndarray, truncated: np.ndarray, env_ids: np.ndarray
    ) -> None:
        """`EpisodeLog.record` of a batch's results [n, ...] for envs `env_ids` [n]."""
        self.all.record(results, ended, truncated)
        tasks = self.env_task[env_ids]
        for t, log in enumerate(self.tasks):
            mine = ended & (tasks == t)
            if mine.any():
                log.record(results, mine, truncated)

    def stats(self) -> dict[str, float | None]:
        stats = self.all.stats()
        returns: dict[str, float | None] = {}
        for name, log in zip(self.names, self.tasks, strict=False):
            label = task_label(name)
            own = log.stats()
            returns[name] = own["mean_return"]
            stats.update({f"{label}/{key}": value for key, value in own.items()})
            stats[f"{label}/score"] = task_score(name, own["mean_return"])
        if self.tasks:
            stats["suite_score"] = suite_score(returns)
        return stats
