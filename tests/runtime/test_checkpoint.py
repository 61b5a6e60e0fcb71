"""Checkpoints: atomic saves, exact round trips, training that resumes as if never stopped, weights-only loads."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

import beast.runtime.checkpoint as ckpt_module
from beast.config import Config
from beast.learn import LinearDecay, build_optimizer, build_scheduler, learn_step
from beast.model import build_model
from beast.runtime.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    check_config,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)

NUM_ACTIONS = 3
T, B = 4, 2


def small_config(**overrides: object) -> Config:
    values: dict[str, object] = dict(
        d_model=32,
        d_state=8,
        headdim=16,
        head_hidden=32,
        action_embed_dim=8,
        mamba_chunk_size=4,
        mamba_backend="torch",
        unroll_length=T,
        batch_size=B,
        total_frames=10_000,
        optimizer="adam",  # Adam keeps two moments and a step count per parameter: more state to lose
    )
    values.update(overrides)
    return dataclasses.replace(Config(), **values)  # type: ignore[arg-type]


def random_batch(seed: int) -> dict[str, torch.Tensor]:
    """A rollout batch [T+1, B] in the learner's layout (beast.learn.learn_step's docstring)."""
    g = torch.Generator().manual_seed(seed)
    S = T + 1
    return {
        "rgb": torch.randint(0, 256, (S, B, 3, 64, 64), generator=g, dtype=torch.uint8),
        "depth": torch.randint(0, 256, (S, B, 1, 64, 64), generator=g, dtype=torch.uint8),
        "enemy": (torch.rand(S, B, 1, 64, 64, generator=g) < 0.1).to(torch.uint8),
        "audio": torch.randint(-32768, 32768, (S, B, 2, 1024), generator=g, dtype=torch.int16),
        "last_action": torch.randint(0, NUM_ACTIONS, (S, B), generator=g),
        "reward": torch.randn(S, B, generator=g),
        "done": torch.rand(S, B, generator=g) < 0.2,
        "truncated": torch.zeros(S, B, dtype=torch.bool),
        "action": torch.randint(0, NUM_ACTIONS, (S, B), generator=g),
        "policy_logits": torch.randn(S, B, NUM_ACTIONS, generator=g),
        "policy_version": torch.zeros(S, B, dtype=torch.int64),
    }


Learner = tuple[torch.nn.Module, torch.optim.Optimizer, LinearDecay]
Trained = tuple[Config, torch.nn.Module, torch.optim.Optimizer, LinearDecay, Path]


def make_learner(cfg: Config, seed: int = 0) -> Learner:
    torch.manual_seed(seed)
    model = build_model(cfg, NUM_ACTIONS)
    optimizer = build_optimizer(model.parameters(), cfg)
    return model, optimizer, build_scheduler(optimizer, cfg)


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LinearDecay,
    cfg: Config,
    seed: int,
    version: int,
) -> None:
    learn_step(
        model,
        optimizer,
        random_batch(seed),
        model.initial_state(B),  # type: ignore[operator]
        cfg,
        scheduler=scheduler,
        frames_seen=version * T * B * cfg.frame_skip,
        learner_version=version,
    )


def assert_same_tree(a: object, b: object, where: str = "") -> None:
    """Equal nested dicts/lists of tensors and plain values, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same_tree(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where  # type: ignore[arg-type]
        for i, (x, y) in enumerate(zip(a, b, strict=True)):  # type: ignore[call-overload]
            assert_same_tree(x, y, f"{where}/{i}")
    else:
        assert a == b, where


@pytest.fixture
def trained(tmp_path: Path) -> Trained:
    """A learner after two real learner steps, saved to tmp_path/checkpoint.pt."""
    cfg = small_config()
    model, optimizer, scheduler = make_learner(cfg)
    for version in range(2):
        train_step(model, optimizer, scheduler, cfg, seed=version, version=version)
    path = tmp_path / CHECKPOINT_NAME
    counters = {"frames": 2 * T * B * cfg.frame_skip, "steps": 2 * T * B, "learner_steps": 2, "episodes": 7}
    save_checkpoint(
        path, model=model, optimizer=optimizer, scheduler=scheduler, counters=counters, cfg=cfg, num_actions=3
    )
    return cfg, model, optimizer, scheduler, path


def test_round_trip_restores_model_optimizer_scheduler_counters_and_config_exactly(trained: Trained) -> None:
    cfg, model, optimizer, scheduler, path = trained
    loaded = load_checkpoint(path)
    assert_same_tree(loaded["model"], model.state_dict(), "model")
    assert_same_tree(loaded["optimizer"], optimizer.state_dict(), "optimizer")
    assert_same_tree(loaded["scheduler"], scheduler.state_dict(), "scheduler")
    assert loaded["counters"] == {
        "frames": 2 * T * B * cfg.frame_skip,
        "steps": 2 * T * B,
        "learner_steps": 2,
        "episodes": 7,
    }
    assert Config.from_dict(loaded["config"]) == cfg
    assert loaded["num_actions"] == NUM_ACTIONS
    # two Adam steps really happened, so the comparison above covered non-trivial optimiser state
    assert int(loaded["optimizer"]["state"][0]["step"]) == 2


def test_training_resumed_from_a_checkpoint_continues_exactly_as_without_stopping(trained: Trained) -> None:
    cfg, model, optimizer, scheduler, path = trained
    loaded = load_checkpoint(path)
    resumed_cfg = Config.from_dict(loaded["config"])
    model2, optimizer2, scheduler2 = make_learner(resumed_cfg, seed=99)  # different init: all must come from file
    model2.load_state_dict(loaded["model"])
    optimizer2.load_state_dict(loaded["optimizer"])
    scheduler2.load_state_dict(loaded["scheduler"])

    train_step(model, optimizer, scheduler, cfg, seed=2, version=2)
    train_step(model2, optimizer2, scheduler2, resumed_cfg, seed=2, version=2)
    assert_same_tree(model2.state_dict(), model.state_dict(), "model after one more step")
    assert_same_tree(optimizer2.state_dict(), optimizer.state_dict(), "optimizer after one more step")
    assert scheduler2.get_last_lr() == scheduler.get_last_lr()
    assert scheduler.get_last_lr()[0] < cfg.learning_rate  # the decay is under test


def _save(path: Path, frames: int) -> None:
    cfg = small_config()
    model, optimizer, scheduler = make_learner(cfg)
    save_checkpoint(
        path,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        counters={"frames": frames},
        cfg=cfg,
        num_actions=NUM_ACTIONS,
    )


def test_save_interrupted_before_the_rename_keeps_the_old_checkpoint_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / CHECKPOINT_NAME
    _save(path, frames=1)

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C between writing the temp file and renaming it

    monkeypatch.setattr(ckpt_module.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _save(path, frames=2)
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT_NAME]
    assert load_checkpoint(path)["counters"] == {"frames": 1}


def test_save_interrupted_mid_write_keeps_the_old_checkpoint_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / CHECKPOINT_NAME
    _save(path, frames=1)
    real_save = torch.save

    def half_written(obj: object, f: object) -> None:
        real_save(obj, f)  # type: ignore[arg-type]
        f.truncate(100)  # type: ignore[attr-defined]  # as if the process stopped after 100 bytes
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_module.torch, "save", half_written)
    with pytest.raises(KeyboardInterrupt):
        _save(path, frames=2)
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT_NAME]
    assert load_checkpoint(path)["counters"] == {"frames": 1}


def test_a_save_clears_temp_files_left_by_a_killed_save(tmp_path: Path) -> None:
    stale = tmp_path / f".{CHECKPOINT_NAME}.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    _save(tmp_path / CHECKPOINT_NAME, frames=3)
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT_NAME]


class _Payload:
    """Unpickling this runs os.mkdir(marker): what a malicious checkpoint could do if loaded without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


def test_loading_refuses_a_checkpoint_holding_a_pickled_object_and_runs_none_of_it(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_NAME
    _save(path, frames=1)
    payload = torch.load(path, weights_only=True)
    marker = tmp_path / "code-ran"
    payload["counters"] = {"frames": _Payload(marker)}
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="weights-only load refuses") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "mkdir" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no checkpoint at"),
        (b"", "corrupt or truncated"),
        (b"not a checkpoint at all", "corrupt or truncated"),
        ("truncated", "corrupt or truncated"),
        ("foreign", "not a beast checkpoint"),
        ("old-format", "checkpoint format 0"),
    ],
)
def test_unusable_files_give_an_error_naming_the_file_and_the_fix(
    tmp_path: Path, content: bytes | str | None, message: str
) -> None:
    path = tmp_path / CHECKPOINT_NAME
    if content == "truncated":
        _save(path, frames=1)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif content == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    elif content == "old-format":
        _save(path, frames=1)
        payload = torch.load(path, weights_only=True)
        payload["format_version"] = 0
        torch.save(payload, path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(path)
    text = str(err.value)
    assert str(path) in text and "\n" not in text
    assert any(fix in text for fix in ("train", "checkpoint"))


def test_latest_checkpoint_is_none_for_a_run_without_one_and_the_file_after_a_save(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "no-such-run") is None
    _save(tmp_path / CHECKPOINT_NAME, frames=1)
    assert latest_checkpoint(tmp_path) == tmp_path / CHECKPOINT_NAME


def test_check_config_names_the_flag_that_differs_from_the_checkpoint(tmp_path: Path) -> None:
    saved = small_config().to_dict()
    check_config(saved, small_config(learning_rate=1e-3, mamba_backend="auto"), tmp_path / CHECKPOINT_NAME)
    with pytest.raises(CheckpointError, match=r"--d-model=64 differs from 32 .*--d-model=32"):
        check_config(saved, small_config(d_model=64), tmp_path / CHECKPOINT_NAME)
    with pytest.raises(CheckpointError, match="--optimizer='rmsprop' differs from 'adam'"):
        check_config(saved, small_config(optimizer="rmsprop"), tmp_path / CHECKPOINT_NAME)


def test_a_multi_task_run_resumes_only_on_its_own_task_list(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_NAME
    saved = small_config(scenario="basic,defend_the_center").to_dict()
    check_config(saved, small_config(scenario="basic,defend_the_center"), path)
    for other in ("defend_the_center,basic", "basic", "basic,defend_the_center,defend_the_line"):
        with pytest.raises(CheckpointError, match="--scenario=basic,defend_the_center"):
            check_config(saved, small_config(scenario=other), path)
    # A single-task checkpoint may still be resumed on another scenario with the same buttons.
    check_config(small_config(scenario="basic").to_dict(), small_config(scenario="deadly_corridor"), path)
