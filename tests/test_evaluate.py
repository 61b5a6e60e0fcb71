"""`run.py --mode=test` on a real checkpoint of a small fresh model, against the real env server and game."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from beast.config import Config
from beast.envs import EnvClient, EnvServer
from beast.envs.client import Results
from beast.envs.tasks import COMMUNAL_BUTTONS, ActionSpace, suite_score, task_config, task_score
from beast.evaluate import EVAL_NAME, GIF_NAME, evaluate_policy, main
from beast.gif import frame
from beast.learn import build_optimizer, build_scheduler
from beast.model import build_model
from beast.runtime.checkpoint import CHECKPOINT_NAME, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
BINARY = os.environ.get("BEAST_ENVSERVER_BINARY", Config().envserver_binary)
BASIC_ACTIONS = 3  # MOVE_LEFT, MOVE_RIGHT, ATTACK
EPISODE_FIELDS = {"episode", "env", "return", "length", "kills", "reached_goal", "truncated", "crashed"}
TASKS = "basic,defend_the_center"
# Their scenarios' buttons (the .cfg files'): the communal space maps basic onto MOVE_LEFT, MOVE_RIGHT, ATTACK
# and defend_the_center onto ATTACK, TURN_LEFT, TURN_RIGHT.
TASK_BUTTONS = [["MOVE_LEFT", "MOVE_RIGHT", "ATTACK"], ["TURN_LEFT", "TURN_RIGHT", "ATTACK"]]


def small_config(**overrides: object) -> Config:
    values: dict[str, object] = dict(
        d_model=32,
        d_state=8,
        headdim=16,
        head_hidden=32,
        action_embed_dim=8,
        mamba_backend="torch",
        scenario="basic",
        envserver_binary=BINARY,
    )
    values.update(overrides)
    return dataclasses.replace(Config(), **values)  # type: ignore[arg-type]


def write_checkpoint(
    path: Path, num_actions: int = BASIC_ACTIONS, scenario: str = "basic", **overrides: object
) -> Config:
    cfg = small_config(scenario=scenario, **overrides)
    torch.manual_seed(0)
    space = ActionSpace.for_tasks(TASK_BUTTONS, TASKS.split(","))
    model = build_model(cfg, num_actions, space.available if "," in scenario else None)
    optimizer = build_optimizer(model.parameters(), cfg)
    save_checkpoint(
        path,
        model=model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg),
        counters={"frames": 1234, "steps": 308, "learner_steps": 2},
        cfg=cfg,
        num_actions=num_actions,
    )
    return cfg


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # one torch thread: a T=1 step of a tiny model gains nothing from two, and loses much on a busy machine
        [sys.executable, str(REPO / "run.py"), "--mode=test", f"--envserver-binary={BINARY}", "--num-threads=1", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_mode_test_with_record_gif_writes_eval_json_and_a_three_panel_gif(tmp_path: Path) -> None:
    path = tmp_path / "run" / CHECKPOINT_NAME
    write_checkpoint(path)
    proc = run_cli("--scenario", "basic", "--episodes", "2", "--record-gif", "--checkpoint", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "reached goal" in proc.stdout

    report = json.loads((path.parent / EVAL_NAME).read_text())
    assert report["checkpoint"] == str(path) and report["scenario"] == "basic"
    assert report["counters"] == {"frames": 1234, "steps": 308, "learner_steps": 2}
    episodes = report["episodes"]
    assert len(episodes) == 2 and [e["episode"] for e in episodes] == [0, 1]
    for e in episodes:
        assert set(e) >= EPISODE_FIELDS
        assert 0 < e["length"] <= 75  # basic times out after 300 tics = 75 steps of 4
        assert isinstance(e["kills"], int) and isinstance(e["reached_goal"], bool)
        # reached goal = ended on its own (not by the timeout), alive; basic's return is -1 per tic, +106 a kill
        assert e["reached_goal"] == (not e["truncated"] and not e["crashed"])
        assert e["truncated"] == (e["length"] == 75)
    summary = report["summary"]
    assert summary["episodes"] == 2
    assert summary["mean_return"] == pytest.approx(np.mean([e["return"] for e in episodes]))

    gif = path.parent / GIF_NAME
    assert report["gif"] == str(gif)
    frames = iio.imread(gif, index=None)
    # GIF frames are palette-quantised: compare the first one with the game's first observation (same seed 0)
    with EnvServer(scenario="basic", num_envs=1, seed=0, binary=BINARY) as server, EnvClient(server.address) as env:
        first = env.reset()
    expected = frame(first["rgb"][0], first["depth"][0], first["enemy"][0], step=0, action="", running_return=0)
    side = 64 * 4
    assert frames.ndim == 4 and frames.shape[0] > 1 and frames.shape[1:] == expected.shape
    top = (expected.shape[0] - side) // 2  # the panels sit between a title strip and a status strip of one height
    panels = frames[0][top : top + side].astype(np.int16)
    difference = np.abs(panels - expected[top : top + side].astype(np.int16))
    for i, name in enumerate(("rgb", "depth", "enemy")):
        assert difference[:, i * side : (i + 1) * side].mean() < 6.0, name
    mask_panel = frames[0][top : top + side, 2 * side :]
    assert mask_panel.max() > 200 and (np.minimum(mask_panel, 255 - mask_panel) < 20).all()  # black and white


def test_mode_test_finds_the_runs_checkpoint_by_xpid_and_prints_json_equal_to_eval_json(tmp_path: Path) -> None:
    # Its model normalises its input: the buffers load only into a model built from the checkpoint's config.
    write_checkpoint(tmp_path / "exp" / CHECKPOINT_NAME, normalize_input=True)
    # no --scenario: the checkpoint's (basic) is used, not the flag's default (deadly_corridor, 7 actions)
    proc = run_cli("--savedir", str(tmp_path), "--xpid", "exp", "--episodes", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed == json.loads((tmp_path / "exp" / EVAL_NAME).read_text())
    assert printed["scenario"] == "basic" and len(printed["episodes"]) == 1 and printed["gif"] is None


def test_the_random_reference_plays_the_scenario_without_a_checkpoint(tmp_path: Path) -> None:
    proc = run_cli("--savedir", str(tmp_path), "--scenario=basic", "--eval-policy=random", "--episodes=3", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["checkpoint"] is None and report["policy"] == "random" and len(report["episodes"]) == 3
    # basic's spec plays 8 tics a step, so its 300-tic timeout ends an episode within 38 steps
    assert all(-450 < e["return"] < 110 and 1 <= e["length"] <= 38 for e in report["episodes"]), report["episodes"]
    assert not list(tmp_path.iterdir()), "no --xpid: nothing is written"


def _exit_2(cfg: Config, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("run.py: error: ") and err.count("\n") == 1, err
    return err


def test_a_missing_checkpoint_exits_2_saying_what_to_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = dataclasses.replace(Config(), mode="test", savedir=str(tmp_path))
    assert "--checkpoint" in _exit_2(dataclasses.replace(cfg, checkpoint=str(tmp_path / "nope.pt")), capsys)
    assert "no checkpoint in" in _exit_2(dataclasses.replace(cfg, xpid="exp"), capsys)
    assert "--checkpoint PATH, or --xpid" in _exit_2(cfg, capsys)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    assert "corrupt" in _exit_2(dataclasses.replace(cfg, checkpoint=str(tmp_path / "bad.pt")), capsys)


def test_a_checkpoint_for_another_action_set_exits_2_naming_the_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / CHECKPOINT_NAME
    write_checkpoint(path, num_actions=5)
    cfg = dataclasses.replace(Config(), mode="test", checkpoint=str(path), envserver_binary=BINARY, episodes=1)
    err = _exit_2(cfg, capsys)
    assert "5 actions" in err and "'basic' has 3" in err


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_evaluate_policy_shares_episodes_among_envs_and_records_env_0s_first_episode(one_thread: None) -> None:
    cfg = small_config()
    torch.manual_seed(0)
    model = build_model(cfg, BASIC_ACTIONS).eval()
    frames: list[np.ndarray] = []
    with EnvServer(scenario="basic", num_envs=2, seed=5, binary=BINARY) as server, EnvClient(server.address) as env:
        episodes = evaluate_policy(model, env, 3, cfg=cfg, frames_out=frames)
    assert [e["env"] for e in episodes] == [0, 0, 1]  # quotas 2 and 1, in env order
    assert [e["episode"] for e in episodes] == [0, 1, 2]
    assert len(frames) == episodes[0]["length"]  # one frame per step of env 0's first episode
    assert frames[0].shape[1] == 3 * 64 * 4 and frames[0].dtype == np.uint8
    assert len({f.shape for f in frames}) == 1


def write_multitask_checkpoint(path: Path) -> Config:
    """A fresh 2-task model's checkpoint, as a basic,defend_the_center run writes it (7 communal actions)."""
    return write_checkpoint(path, num_actions=len(COMMUNAL_BUTTONS), scenario=TASKS)


class RecordingClient:
    """The client `evaluate_policy` drives, keeping every action sent to the server."""

    def __init__(self, client: EnvClient) -> None:
        self.client = client
        self.info = client.info
        self.sent: list[np.ndarray] = []

    def reset(self) -> Results:
        return self.client.reset()

    def step(self, actions: np.ndarray) -> Results:
        self.sent.append(np.array(actions))
        return self.client.step(actions)


class RecordingModel(torch.nn.Module):
    """The model, keeping the task ids it was given and the actions it chose."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.tasks: list[torch.Tensor] = []
        self.actions: list[torch.Tensor] = []

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> Any:
        return self.model.initial_state(batch_size, device)  # type: ignore[operator]

    def forward(self, inputs: dict[str, torch.Tensor], state: Any) -> Any:
        outputs, state = self.model(inputs, state)
        self.tasks.append(inputs["task"].clone())
        self.actions.append(outputs["action"].clone())
        return outputs, state


def test_evaluate_policy_on_a_multitask_space_sends_each_tasks_own_buttons(one_thread: None) -> None:
    cfg = small_config(scenario=TASKS)
    names = TASKS.split(",")
    buttons = []
    for t in range(2):  # the servers' own buttons, as the trainer and --mode=test build the space from
        task_cfg = dataclasses.replace(task_config(cfg, t), envs_per_server=1)
        with EnvServer.from_config(task_cfg) as server, EnvClient(server.address) as env:
            buttons.append(env.info.action_names)
    assert buttons == TASK_BUTTONS
    space = ActionSpace.for_tasks(buttons, names)
    torch.manual_seed(0)
    model = RecordingModel(build_model(cfg, space.num_actions, space.available).train())  # train(): it samples
    for t in range(2):
        model.tasks.clear()
        model.actions.clear()
        frames: list[np.ndarray] = []
        task_cfg = dataclasses.replace(task_config(cfg, t), envs_per_server=2)
        with EnvServer.from_config(task_cfg) as server, EnvClient(server.address) as env:
            client = RecordingClient(env)
            episodes = evaluate_policy(
                model,
                client,
                2,
                cfg=task_cfg,
                frames_out=frames,
                max_steps=40,
                task=t,
                actions=space,  # type: ignore[arg-type]
            )
        assert all((ids == t).all() for ids in model.tasks), "the model reads the task's id"
        chosen = torch.cat(model.actions, dim=1)[0].numpy()
        # the untrained policy is near uniform over the task's three buttons and never picks one it lacks
        assert set(chosen.tolist()) == set(np.flatnonzero(space.available[t]).tolist()), chosen
        sent = np.stack(client.sent).reshape(-1)
        assert (sent == space.native[t, chosen]).all() and set(sent.tolist()) == {0, 1, 2}
        assert len(frames) > 0 and all(e["length"] > 0 for e in episodes)


def test_mode_test_on_a_multitask_checkpoint_reports_every_task_and_the_suite_score(tmp_path: Path) -> None:
    path = tmp_path / "run" / CHECKPOINT_NAME
    write_multitask_checkpoint(path)
    proc = run_cli("--episodes", "1", "--record-gif", "--checkpoint", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "suite score" in proc.stdout and "defend_the_center" in proc.stdout

    report = json.loads((path.parent / EVAL_NAME).read_text())
    assert report["scenario"] == TASKS and report["counters"]["frames"] == 1234
    assert "summary" not in report and "episodes" not in report, "a multi-task report's figures are per task"
    assert list(report["tasks"]) == TASKS.split(",")
    for name, task in report["tasks"].items():
        assert task["summary"]["episodes"] == 1 and set(task["episodes"][0]) >= EPISODE_FIELDS
        assert task["score"] == pytest.approx(task_score(name, task["summary"]["mean_return"]))
        gif = path.parent / f"episode_{name}.gif"
        assert task["gif"] == str(gif) and iio.imread(gif, index=None).shape[0] > 1
    # each task plays its own spec's game: basic 8 tics a step, so its 300-tic timeout comes within 38 steps
    assert report["tasks"]["basic"]["episodes"][0]["length"] <= 38
    returns = {name: task["summary"]["mean_return"] for name, task in report["tasks"].items()}
    assert report["suite_score"] == pytest.approx(suite_score(returns))
    assert not (path.parent / GIF_NAME).exists()


def test_mode_test_plays_only_the_task_scenario_names_and_the_random_reference_plays_them_all(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_NAME
    write_multitask_checkpoint(path)
    proc = run_cli("--scenario", "basic", "--episodes", "2", "--json", "--checkpoint", str(path))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["scenario"] == "basic" and list(report["tasks"]) == ["basic"]
    assert len(report["tasks"]["basic"]["episodes"]) == 2
    assert report["suite_score"] == pytest.approx(report["tasks"]["basic"]["score"])

    proc = run_cli("--savedir", str(tmp_path), f"--scenario={TASKS}", "--eval-policy=random", "--episodes=1", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["checkpoint"] is None and list(report["tasks"]) == TASKS.split(",")
    assert all(len(task["episodes"]) == 1 for task in report["tasks"].values())


def test_a_scenario_outside_the_checkpoints_tasks_exits_2_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    multi, single = tmp_path / "multi.pt", tmp_path / "single.pt"
    write_multitask_checkpoint(multi)
    write_checkpoint(single)
    cfg = dataclasses.replace(Config(), mode="test", envserver_binary=BINARY, episodes=1)
    err = _exit_2(dataclasses.replace(cfg, checkpoint=str(multi), scenario="take_cover"), capsys)
    assert "take_cover is not a task" in err and "basic, defend_the_center" in err
    err = _exit_2(dataclasses.replace(cfg, checkpoint=str(single), scenario=TASKS), capsys)
    assert "trained on 'basic' alone" in err
