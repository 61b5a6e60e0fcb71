"""The system benchmark's learner row: `learn_step` alone on its stand-in batch of full rollouts."""

from __future__ import annotations

from beast.bench.system import learner_frames_per_second
from beast.config import Config


def test_the_learner_row_trains_on_a_batch_with_every_key_the_learner_requires() -> None:
    cfg = Config(unroll_length=2, batch_size=2, d_model=32, head_hidden=16, action_embed_dim=8)
    cfg.validate()
    assert learner_frames_per_second(cfg, num_actions=3, seconds=0.0) > 0
