"""Synchronous learners on torch.distributed: what the ranks of a `torchrun` job share, and when they meet.

Every rank runs the whole single-machine trainer: its own env servers, batcher and learner thread. The ranks meet
once per learner step, in the learner thread, in this order:
  1. `RankSync.before_step`: one all-reduce of (not ready, env steps, episodes, rank 0's doom skill). A rank that is
     stopping (Ctrl-C, an error) is not ready, and then every rank stops after the same step: none waits forever
     at a collective a stopped rank will never join. The sums are the run's counters, which rank 0 logs.
  2. `learn_step(..., ranks=RankSync)`: the gradients (before clipping) are summed over the ranks and PopArt's
     batch moments averaged, which makes the step the one a single learner would take on the N x B global batch;
     the step's statistics are averaged. As every rank starts from rank 0's weights (`broadcast_state`) and
     applies the same gradient, every rank holds the same weights after every step, bit for bit (`fingerprint`
     checks it at the end).
Gloo on CPU, NCCL on CUDA. Rank 0 alone writes the logs, the progress view, the checkpoints and evaluates.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from beast.config import Config

# Rank r's games are seeded from cfg.seed + r x this, far above the seeds one rank's servers and restarts use.
RANK_SEED_STRIDE = 10_000_019


@dataclass(frozen=True)
class World:
    """Where this process stands in the job: torchrun's RANK, WORLD_SIZE and LOCAL_RANK (1 process without it)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run's files and shows its progress."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> World:
        try:
            rank = int(os.environ.get("RANK", "0"))
            size = int(os.environ.get("WORLD_SIZE", "1"))
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        except ValueError as err:
            raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them): {err}") from err
        if not 0 <= rank < size:
            raise ValueError(f"RANK={rank} is outside WORLD_SIZE={size}; start ranks with torchrun.")
        return cls(rank, size, local_rank)


def rank_device(device: torch.device, world: World) -> torch.device:
    """One GPU per rank on a node: a plain `cuda` becomes `cuda:LOCAL_RANK`."""
    if device.type == "cuda" and device.index is None and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device


def rank_config(cfg: Config, world: World) -> Config:
    """The settings of this rank's envs: games seeded apart from every other rank's, and its share of the remote
    servers (`--env-servers` is dealt round-robin, so no two ranks drive one server)."""
    if not world.distributed:
        return cfg
    remote = cfg.remote_server_list()
    share = remote[world.rank :: world.size]
    if remote and not share and cfg.num_servers == 0:
        raise ValueError(
            f"--env-servers lists {len(remote)} servers for {world.size} ranks and --num-servers is 0: rank "
            f"{world.rank} would have no envs; list at least one server per rank, or add local ones."
        )
    return dataclasses.replace(cfg, seed=cfg.seed + world.rank * RANK_SEED_STRIDE, env_servers=",".join(share))


def init_process_group(world: World, device: torch.device, timeout_s: float) -> None:
    """Join the job's process group; a rank that waits longer than `timeout_s` at a collective fails."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(seconds=timeout_s)
    )


def broadcast_text(text: str, world: World, device: torch.device) -> str:
    """Rank 0's `text` on every rank (the run folder it chose), sent as bytes: nothing is unpickled."""
    if not world.distributed:
        return text
    data = text.encode()
    length = torch.tensor([len(data)], dtype=torch.int64, device=device)
    dist.broadcast(length, src=0)
    buffer = torch.zeros(int(length.item()), dtype=torch.uint8, device=device)
    if world.is_main:
        buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(buffer, src=0)
    return bytes(buffer.cpu().tolist()).decode()


def broadcast_state(model: nn.Module, world: World) -> None:
    """Every rank starts from rank 0's parameters and buffers (PopArt's statistics are buffers)."""
    if not world.distributed:
        return
    with torch.no_grad():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def fingerprint(state: Mapping[str, torch.Tensor]) -> int:
    """CRC-32 of a state dict's names and bytes: equal on two ranks only if their weights are bit-identical."""
    crc = 0
    for name, tensor in state.items():
        crc = zlib.crc32(name.encode(), crc)
        crc = zlib.crc32(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes(), crc)
    return crc


def gather_fingerprints(model: nn.Module, world: World, device: torch.device) -> list[int]:
    """Every rank's `fingerprint` of its model, in rank order."""
    mine = torch.tensor([fingerprint(model.state_dict())], dtype=torch.int64, device=device)
    everyone = [torch.zeros_like(mine) for _ in range(world.size)]
    dist.all_gather(everyone, mine)
    return [int(t.item()) for t in everyone]


class RankSync:
    """The learner thread's meetings with the other ranks (module docstring), and the run's summed counters; only
    made when there are other ranks."""

    def __init__(
        self,
        world: World,
        device: torch.device,
        local_counts: Callable[[], tuple[int, int, int]],
        skill: Callable[[], int],
    ) -> None:
        self.world = world
        self.device = device
        self.local_counts = local_counts  # this rank's (env steps, episodes, env frames) since the run started
        self.skill = skill  # rank 0's curriculum decides the skill of every rank
        self.env_steps = self.episodes = self.env_frames = 0  # summed over the ranks at each step
        self.step_frames = 0  # the frames of the step about to be taken, all ranks' batches together
        self.leader_skill = skill()

    def before_step(self, ready: bool, frames: int = 0) -> bool:
        """Whether every rank is ready for the next learner step (`frames`: this rank's batch's); updates the
        summed counters, the step's frames and rank 0's skill."""
        env_steps, episodes, env_frames = self.local_counts()
        leader_skill = self.skill() if self.world.is_main else 0
        values = torch.tensor(
            [0.0 if ready else 1.0, env_steps, episodes, env_frames, frames, leader_skill],
            dtype=torch.float64,
            device=self.device,
        )
        dist.all_reduce(values)
        not_ready, self.env_steps, self.episodes, self.env_frames, self.step_frames, self.leader_skill = (
            int(v) for v in values.tolist()
        )
        return not_ready == 0

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of `tensor` over the ranks, in place."""
        dist.all_reduce(tensor)
        return tensor

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of `tensor` over the ranks, in place (gloo has no AVG: a sum, then a division)."""
        dist.all_reduce(tensor)
        return tensor.div_(self.world.size)
