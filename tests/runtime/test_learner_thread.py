"""The learner thread on the real model and a real buffer pool: what it does when the gradient is not finite."""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from beast.learn.optim import build_optimizer, build_scheduler
from beast.model import build_model
from beast.runtime.buffers import BufferPool, rollout_specs
from beast.runtime.learner_thread import NONFINITE_DUMP, NONFINITE_LIMIT, LearnerThread
from beast.runtime.weights import PolicyWeights
from tests.learn.conftest import NUM_ACTIONS, small_config

OBS = {
    "rgb": {"shape": [3, 64, 64], "dtype": "uint8"},
    "depth": {"shape": [1, 64, 64], "dtype": "uint8"},
    "enemy": {"shape": [1, 64, 64], "dtype": "uint8"},
    "audio": {"shape": [2, 1024], "dtype": "int16"},
}


def test_gradients_that_stay_nan_stop_the_run_with_the_weights_intact_and_the_first_batch_saved(
    tmp_path: Path,
) -> None:
    cfg = small_config()
    torch.manual_seed(0)
    model = build_model(cfg, NUM_ACTIONS)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    model.audio.fc.weight.register_hook(lambda grad: grad * torch.nan)  # the organ a real run's NaN came from
    optimizer = build_optimizer(model.parameters(), cfg)
    pool = BufferPool(
        2 * cfg.batch_size, cfg.unroll_length, rollout_specs(OBS, NUM_ACTIONS), model.initial_state(1, "cpu")
    )
    stop = threading.Event()

    def actors() -> None:  # every free buffer goes back full, as the batcher's would
        while not stop.is_set():
            buffer_id = pool.acquire(timeout_s=0.05)
            if buffer_id is not None:
                pool.submit(buffer_id)

    feeder = threading.Thread(target=actors)
    feeder.start()
    learner = LearnerThread(
        cfg,
        model,
        optimizer,
        build_scheduler(optimizer, cfg),
        pool,
        PolicyWeights(build_model(cfg, NUM_ACTIONS)),
        torch.device("cpu"),
        stop,
        dump_dir=tmp_path,
    )
    learner.run()
    feeder.join(timeout=10)

    assert isinstance(learner.error, RuntimeError)
    assert f"not finite in {NONFINITE_LIMIT} steps in a row" in str(learner.error)
    assert "audio nan" in str(learner.error)  # the block it came from is named
    assert stop.is_set() and learner.nonfinite_steps == NONFINITE_LIMIT
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), f"{name} moved on a dropped step"
    dump = torch.load(tmp_path / NONFINITE_DUMP, weights_only=True)
    assert dump["batch"]["audio"].shape == (cfg.unroll_length + 1, cfg.batch_size, 2, 1024)
    assert torch.equal(dump["model"]["audio.fc.weight"], before["audio.fc.weight"])
