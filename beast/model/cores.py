"""The recurrent cores behind one interface: Mamba2 (the seed's), LSTM and none (feed-forward) as baselines.

Every core maps fused organ features x [T, B, in_dim] and done [T, B] (true: the state is zeroed before step t)
to features [T, B, d_model], carrying a state that is a tuple of tensors with the batch on dim 0:

    mamba: (conv window [B, d_conv-1, conv_dim], SSM state [B, H, P, N])
    lstm:  (h [B, 1, d_model], c [B, 1, d_model])
    none:  ()

Each core owns its input projection `fuse` (in_dim -> d_model), so the parameter group "core" is everything
between the organs and the heads.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from beast.config import Config
from beast.model.mamba2 import Mamba2

State = tuple[torch.Tensor, ...]


class Core(nn.Module):
    """Interface: `initial_state(B, device)` and `forward(x [T, B, in], done [T, B], state) -> (y, state)`."""

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        raise NotImplementedError


class MambaCore(Core):
    """fuse -> pre-norm residual Mamba2 block (mamba_ssm's Block layout: u + mixer(RMSNorm(u)))."""

    def __init__(self, cfg: Config, in_dim: int) -> None:
        super().__init__()
        self.fuse = nn.Linear(in_dim, cfg.d_model)
        self.norm = nn.RMSNorm(cfg.d_model, eps=1e-5)
        self.mixer = Mamba2(
            cfg.d_model,
            d_state=cfg.d_state,
            d_conv=cfg.d_conv,
            expand=cfg.expand,
            headdim=cfg.headdim,
            chunk_size=cfg.mamba_chunk_size,
            backend=cfg.mamba_backend,
        )

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        return self.mixer.initial_state(batch_size, device)

    def forward(self, x: torch.Tensor, done: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        u = F.silu(self.fuse(x)).transpose(0, 1)  # [B, T, d_model]: the scan is batch-major
        # Normalise in >= float32 (bf16 autocast hands in bf16 features; the weight stays float32).
        normed = self.norm(u.to(torch.promote_types(u.dtype, torch.float32))).to(u.dtype)
        y, new_state = self.mixer(normed, (state[0], state[1]), done.transpose(0, 1))
        return (u + y).transpose(0, 1), new_state


class LSTMCore(Core):
    """fuse -> one-layer LSTM; resets zero (h, c) before the step, as TorchBeast's AtariNet does."""

    def __init__(self, cfg: Config, in_dim: int) -> None:
        super().__init__()
        self.fuse = nn.Linear(in_dim, cfg.d_model)
        self.lstm = nn.LSTM(cfg.d_model, cfg.d_model, num_layers=1)

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        dtype = self.fuse.weight.dtype
        zeros = torch.zeros(batch_size, 1, self.lstm.hidden_size, device=device, dtype=dtype)
        return (zeros, zeros.clone())

    def forward(self, x: torch.Tensor, done: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        u = F.relu(self.fuse(x))  # [T, B, d_model]
        T = u.shape[0]
        # nn.LSTM wants [layers, B, H]; our convention keeps the batch on dim 0.
        h, c = (s.transpose(0, 1).to(u.dtype) for s in state)
        # Run cuDNN/fused LSTM over the longest spans with no reset inside: a reset only ever happens at a span's
        # first step, where the affected rows are zeroed. Same result as TorchBeast's per-step loop, fewer calls.
        starts = [0] + [t for t in range(1, T) if bool(done[t].any())]
        outputs = []
        for i, t0 in enumerate(starts):
            t1 = starts[i + 1] if i + 1 < len(starts) else T
            keep = (~done[t0]).to(u.dtype).view(1, -1, 1)
            out, (h, c) = self.lstm(u[t0:t1], (h * keep, c * keep))
            outputs.append(out)
        return torch.cat(outputs, dim=0), (h.transpose(0, 1), c.transpose(0, 1))


class FeedForwardCore(Core):
    """fuse -> ReLU; no state, resets are irrelevant."""

    def __init__(self, cfg: Config, in_dim: int) -> None:
        super().__init__()
        self.fuse = nn.Linear(in_dim, cfg.d_model)

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        return ()

    def forward(self, x: torch.Tensor, done: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        return F.relu(self.fuse(x)), ()


def build_core(cfg: Config, in_dim: int) -> Core:
    """The core `cfg.core` names, reading in_dim fused features."""
    cores: dict[str, Callable[[Config, int], Core]] = {"mamba": MambaCore, "lstm": LSTMCore, "none": FeedForwardCore}
    return cores[cfg.core](cfg, in_dim)
