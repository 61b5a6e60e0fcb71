"""An automatic difficulty curriculum: the Doom skill rises when the evaluated agent succeeds often enough.

Opt-in (`--curriculum-threshold`). deadly_corridor at skill 5 kills an untrained agent in seconds, before it has
seen enough shooting to learn that shooting pays; at skill 1 the same agent reaches the vest by running. Starting
easy and raising the skill by one each time an evaluation's greedy success rate (`reached_goal_rate`, see
`beast.evaluate`) reaches the threshold keeps the agent where it still succeeds sometimes, up to skill 5.

The skill in force is kept with the checkpoint's counters, so `--resume` continues at it. Raising it restarts the
local env servers with the new skill (their unfinished rollouts, played at the old one, are dropped); remote
servers keep the skill they were started with.
"""

from __future__ import annotations

from beast.config import Config

MAX_SKILL = 5
SUCCESS_KEY = "eval/greedy/reached_goal_rate"


class Curriculum:
    """The skill in force and the rule that raises it; `after_evaluation` says when to change servers."""

    def __init__(self, cfg: Config, skill: int | None = None) -> None:
        self.threshold = cfg.curriculum_threshold
        self.skill = skill if skill else max(cfg.doom_skill, 1)

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    def after_evaluation(self, stats: dict[str, float | None]) -> int | None:
        """The new skill if this evaluation's success rate reached the threshold below skill 5, else None."""
        success = stats.get(SUCCESS_KEY)
        if not self.enabled or success is None or success < self.threshold or self.skill >= MAX_SKILL:
            return None
        self.skill += 1
        return self.skill
