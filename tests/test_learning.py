"""Learning: on `basic`, a short training run on the defaults must beat a random policy measured in the same test;
and one agent trained on two scenarios at once must beat random on both.

Both policies play the same evaluation episodes (same scenario, same env seeds, same count) through V's
`beast.evaluate.evaluate_policy`. The basic expert plays greedily (argmax), as its target is stated; the two-task
agent plays as it was trained, sampling: after ~130k frames a task, its argmax can swing between two moves
forever (measured: one run's greedy rocket_basic timed out at -300 in 2 of 12 episodes, mean -10.6, where sampling
killed in 12 of 12, mean 32.8; CI failed the greedy version at basic -243.9 and -325.8). The budget is set in
frames so the test is the same on any machine; on 2 CPU cores it takes a few minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from beast.config import Config
from beast.envs import EnvClient, EnvServer
from beast.evaluate import evaluate_policy
from beast.model import build_model
from beast.runtime.checkpoint import CHECKPOINT_NAME, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
EPISODES = 24
EVAL_SEED = 12345  # evaluation seeds differ from the training servers' (seed 0..)
# The defaults: basic's scenario spec (beast/envs/scenarios.py), nothing but the budget and the log interval set.
FLAGS = ["--scenario=basic", "--total-frames=400000", "--log-interval-s=10"]


class RandomAgent(nn.Module):
    """Uniform random actions behind the model interface `evaluate_policy` drives."""

    def __init__(self, num_actions: int) -> None:
        super().__init__()
        self.num_actions = num_actions
        self.generator = torch.Generator().manual_seed(0)

    def initial_state(self, batch_size: int, device: object = "cpu") -> tuple:
        return ()

    def forward(self, inputs: dict, state: tuple) -> tuple[dict, tuple]:
        n = inputs["done"].shape[1]
        return {"action": torch.randint(self.num_actions, (1, n), generator=self.generator)}, state


def mean_return(model: nn.Module, cfg: Config) -> float:
    with (
        EnvServer(scenario=cfg.scenario, num_envs=8, seed=EVAL_SEED, frame_skip=cfg.frame_skip) as server,
        EnvClient(server.address) as client,
    ):
        episodes = evaluate_policy(model, client, EPISODES, cfg=cfg)
    assert len(episodes) == EPISODES
    return float(np.mean([e["return"] for e in episodes]))


def run_py(*flags: str) -> str:
    """`run.py FLAGS` to the end; its stdout."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *flags], cwd=ROOT, capture_output=True, text=True, timeout=480
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_training_on_basic_beats_a_random_policy(tmp_path: Path) -> None:
    run_py("--mode=train", f"--savedir={tmp_path}", "--xpid=basic", *FLAGS)
    checkpoint = load_checkpoint(tmp_path / "basic" / CHECKPOINT_NAME)
    cfg = Config.from_dict(checkpoint["config"])
    model = build_model(cfg, checkpoint["num_actions"])
    model.load_state_dict(checkpoint["model"])
    trained = mean_return(model.eval(), cfg)
    random = mean_return(RandomAgent(checkpoint["num_actions"]), cfg)
    print(f"basic, {EPISODES} episodes: random policy {random:.1f}, trained greedy policy {trained:.1f}")
    # Random play on basic scores about -170 (frame skip 4); killing the monster quickly scores up to ~+90.
    assert trained > random + 100, f"trained {trained:.1f} vs random {random:.1f}"
    assert trained > 0, f"trained {trained:.1f}"


@pytest.mark.slow
def test_one_agent_trained_on_two_scenarios_beats_random_on_both(tmp_path: Path) -> None:
    # Their specs' settings, each task its own (basic and rocket_basic: frame skip 8, reward scale 0.01), the
    # run's small batches; a third of their two experts' budgets together.
    suite = "basic,rocket_basic"
    train = [f"--scenario={suite}", "--total-frames=260000", "--eval-interval-frames=0", "--log-interval-s=10"]
    log = run_py("--mode=train", f"--savedir={tmp_path}", "--xpid=two", *train)
    test = ["--mode=test", f"--savedir={tmp_path}", "--json", f"--episodes={EPISODES // 2}", f"--seed={EVAL_SEED}"]
    trained = json.loads(run_py(*test, "--xpid=two", "--eval-policy=sample"))["tasks"]
    random = json.loads(run_py(*test, f"--scenario={suite}", "--eval-policy=random"))["tasks"]
    for task in suite.split(","):
        mine, theirs = trained[task]["summary"]["mean_return"], random[task]["summary"]["mean_return"]
        print(f"{task}, {EPISODES // 2} episodes: random policy {theirs:.1f}, trained sampled policy {mine:.1f}")
        # Random play scores about -180 (basic) and -200 (rocket_basic); their experts +80 and +64.
        assert mine > theirs + 100 and mine > 0, f"{task}: trained {mine:.1f} vs random {theirs:.1f}\n{log[-2000:]}"
