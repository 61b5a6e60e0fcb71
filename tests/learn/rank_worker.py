"""One rank of `test_learner.py::test_two_ranks_take_the_step_of_one_learner_on_both_batches`, run as a script.

`python rank_worker.py RANK WORLD_SIZE DIR`: joins a gloo group through DIR/store, builds the model from
DIR/config.json with a seed of its own (so only `broadcast_state` can make the ranks start alike), takes two
learner steps on DIR/batch_RANK.pt with the ranks' reductions, then asks to stop on every rank but 0, and writes
what it holds to DIR/rank_RANK.pt (weights) and DIR/rank_RANK.json (statistics and the synced counters).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from beast.config import Config
from beast.learn import build_optimizer, learn_step
from beast.model import build_model
from beast.runtime.distributed import RankSync, World, broadcast_state


def main(rank: int, size: int, folder: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder / 'store'}", rank=rank, world_size=size)
    world = World(rank, size)
    setup = json.loads((folder / "config.json").read_text())
    cfg = Config.from_dict(setup["config"])
    torch.manual_seed(100 + rank)
    model = build_model(cfg, setup["num_actions"])
    broadcast_state(model, world)
    optimizer = build_optimizer(model.parameters(), cfg)
    sync = RankSync(
        world,
        torch.device("cpu"),
        local_counts=lambda: (10 * (rank + 1), rank + 1, 40 * (rank + 1)),
        skill=lambda: 3 + rank,
    )
    batch = torch.load(folder / f"batch_{rank}.pt", weights_only=True)
    stats, ready, step_frames = [], [], []
    for version in range(2):
        ready.append(sync.before_step(ready=True, frames=100 * (rank + 1)))
        step_frames.append(sync.step_frames)
        state = model.initial_state(cfg.batch_size, "cpu")
        stats.append(learn_step(model, optimizer, batch, state, cfg, learner_version=version, ranks=sync))
    ready.append(sync.before_step(ready=rank == 0))
    torch.save(model.state_dict(), folder / f"rank_{rank}.pt")
    synced = {
        "env_steps": sync.env_steps,
        "episodes": sync.episodes,
        "env_frames": sync.env_frames,
        "step_frames": step_frames,
        "leader_skill": sync.leader_skill,
    }
    (folder / f"rank_{rank}.json").write_text(json.dumps({"stats": stats, "ready": ready, **synced}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
