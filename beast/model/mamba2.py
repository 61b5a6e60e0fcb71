"""A Mamba2 (SSD) block that carries its state across rollouts, with two interchangeable scan paths.

Parameter names and parameterisation follow mamba_ssm's `Mamba2` (ngroups = 1, no extra MLP part), so weights can
be compared or moved between the two: `in_proj` -> [z, x, B, C, dt]; depthwise causal `conv1d` over [x, B, C];
dt = softplus(dt_raw + dt_bias); A = -exp(A_log); skip `D`; gated RMS `norm` (rmsnorm(y * silu(z)), mamba_ssm's
`RMSNormGated` with norm_before_gate=False); `out_proj`.

State (batch dim 0, as everywhere in `beast.model`): `(conv_window [B, d_conv-1, conv_dim], ssm [B, H, P, N])`,
kept in float32 (or the parameters' dtype when that is wider, e.g. float64 in tests) whatever the autocast dtype.

Resets: `reset[b, t]` zeroes the state before step t. The convolution handles them itself in both paths: the
cached window is prepended to the inputs, and every tap that would reach back across a reset is masked, which is
exactly what zeroing the window before step t does in step mode. The scan gets them as segment ids
`seq_idx = cumsum(reset)` (CUDA kernel) or the same segment masks (`beast.model.ssd`).

Scan paths: "cuda" calls `mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined`; "torch" calls
`beast.model.ssd.ssd_chunk_scan`; a single step (T = 1, acting) always uses `ssd_step`, which is exact and cheap.
"auto" takes the kernel for CUDA tensors when it imports, the reference path otherwise (both compute the same
function; the GPU tests check that).
"""

# ruff: noqa: N803 -- mamba_ssm's argument names (A_init_range, xBC) kept for side-by-side reading

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from beast.config import ConfigError
from beast.model.ssd import ssd_chunk_scan, ssd_step

MambaState = tuple[torch.Tensor, torch.Tensor]


@functools.cache
def load_kernel() -> tuple[Callable[..., Any] | None, str]:
    """`(mamba_chunk_scan_combined, "")` if mamba-ssm's Triton kernel imports, else `(None, why not)`."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as err:  # ImportError, or a broken compiled extension raising something else on import
        return None, f"{type(err).__name__}: {err}"
    return mamba_chunk_scan_combined, ""


def check_backend(backend: str) -> None:
    """Fail early, with the fix, when `--mamba-backend=cuda` cannot work on this machine."""
    if backend != "cuda":
        return
    if not torch.cuda.is_available():
        raise ConfigError("--mamba-backend=cuda needs a CUDA device; use --mamba-backend=auto or torch.")
    kernel, why = load_kernel()
    if kernel is None:
        raise ConfigError(
            f"--mamba-backend=cuda needs mamba-ssm's Triton kernels (pip install '.[cuda]'), but the import failed "
            f"({why}); see docs/gpu.md, or use --mamba-backend=torch."
        )


class RMSNormGated(nn.Module):
    """rmsnorm(y * silu(z)) * weight over the last dim: mamba_ssm's RMSNormGated (one group, gate before norm)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        # Normalise in >= float32: the mean of squares of bf16 activations is too coarse.
        cdt = torch.promote_types(y.dtype, torch.float32)
        g = y.to(cdt) * F.silu(z.to(cdt))
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)
        return (g * self.weight.to(cdt)).to(y.dtype)


class Mamba2(nn.Module):
    """One Mamba2 mixer: u [B, T, d_model] -> y [B, T, d_model], carrying (conv window, SSM state)."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        chunk_size: int = 64,
        backend: str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        A_init_range: tuple[float, float] = (1.0, 16.0),
    ) -> None:
        super().__init__()
        d_inner = expand * d_model
        if d_inner % headdim:
            raise ConfigError(f"expand * d_model ({d_inner}) must be a multiple of headdim ({headdim}).")
        if backend not in ("auto", "cuda", "torch"):
            raise ConfigError(f"mamba backend {backend!r} is not one of auto, cuda, torch.")
        check_backend(backend)
        self.d_inner, self.d_state, self.d_conv, self.headdim = d_inner, d_state, d_conv, headdim
        self.nheads = d_inner // headdim
        self.conv_dim = d_inner + 2 * d_state
        self.chunk_size = chunk_size
        self.backend = backend

        self.in_proj = nn.Linear(d_model, 2 * d_inner + 2 * d_state + self.nheads, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, padding=d_conv - 1)
        # dt starts log-uniform in [dt_min, dt_max]; dt_bias is its softplus inverse (as mamba_ssm initialises it).
        dt = torch.exp(torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(*A_init_range)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        self.norm = RMSNormGated(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def state_dtype(self) -> torch.dtype:
        return torch.promote_types(self.A_log.dtype, torch.float32)

    def initial_state(self, batch_size: int, device: torch.device | str) -> MambaState:
        """Zeros: (conv window [B, d_conv-1, conv_dim], SSM state [B, H, P, N])."""
        dtype = self.state_dtype()
        return (
            torch.zeros(batch_size, self.d_conv - 1, self.conv_dim, device=device, dtype=dtype),
            torch.zeros(batch_size, self.nheads, self.headdim, self.d_state, device=device, dtype=dtype),
        )

    def uses_kernel(self, device: torch.device) -> bool:
        """Whether a sequence on `device` goes through the Triton kernel (T > 1 only)."""
        if self.backend == "torch" or device.type != "cuda":
            if self.backend == "cuda":
                raise RuntimeError("--mamba-backend=cuda: the model's tensors are not on a CUDA device.")
            return False
        return load_kernel()[0] is not None

    def _conv(self, xBC: torch.Tensor, window: torch.Tensor, seg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal depthwise conv over xBC [B, T, C] after `window` [B, K-1, C], taps masked across resets.

        seg [B, T] is cumsum(reset); the window belongs to segment 0. Returns (conv output [B, T, C] before the
        activation, the new window [B, K-1, C] with entries from before the last reset zeroed).
        """
        batch, T, _ = xBC.shape
        K = self.d_conv
        full = torch.cat([window.to(xBC.dtype), xBC], dim=1)  # [B, T+K-1, C]
        seg_full = torch.cat([seg.new_zeros(batch, K - 1), seg], dim=1)  # [B, T+K-1]
        weight = self.conv1d.weight[:, 0, :].to(xBC.dtype)  # [C, K]; tap K-1 is the current step
        out = xBC * weight[:, K - 1]
        for k in range(K - 1):
            same_episode = (seg_full[:, k : k + T] == seg).unsqueeze(-1).to(xBC.dtype)  # [B, T, 1]
            out = out + full[:, k : k + T] * same_episode * weight[:, k]
        bias = self.conv1d.bias
        assert bias is not None
        out = out + bias.to(xBC.dtype)
        keep = (seg_full[:, T:] == seg[:, -1:]).unsqueeze(-1)  # [B, K-1, 1]
        new_window = torch.where(keep, full[:, T:], torch.zeros((), dtype=full.dtype, device=full.device))
        return out, new_window.to(self.state_dtype())

    def forward(self, u: torch.Tensor, state: MambaState, reset: torch.Tensor) -> tuple[torch.Tensor, MambaState]:
        """u [B, T, d_model], state as `initial_state`, reset [B, T] bool -> (y [B, T, d_model], new state)."""
        batch, T, _ = u.shape
        window, ssm = state
        zxbcdt = self.in_proj(u)
        z, xBC, dt_raw = torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.nheads], dim=-1)
        seg = torch.cumsum(reset.to(torch.long), dim=1)  # [B, T]
        xBC, new_window = self._conv(xBC, window, seg)
        xBC = F.silu(xBC)
        x, Bm, Cm = torch.split(xBC, [self.d_inner, self.d_state, self.d_state], dim=-1)
        x = x.reshape(batch, T, self.nheads, self.headdim)
        A = -torch.exp(self.A_log.to(self.state_dtype()))  # [H]

        if T > 1 and self.uses_kernel(u.device):
            kernel, _ = load_kernel()
            assert kernel is not None
            y, new_ssm = kernel(
                x,
                dt_raw,
                A,
                Bm.unsqueeze(2),
                Cm.unsqueeze(2),
                self.chunk_size,
                dt_bias=self.dt_bias.to(self.state_dtype()),
                initial_states=ssm,
                seq_idx=seg.to(torch.int32).contiguous(),
                dt_softplus=True,
                return_final_states=True,
            )
        else:
            if self.backend == "cuda":
                self.uses_kernel(u.device)  # raises if the tensors are not on CUDA
            # F.softplus' threshold (20) matches the kernel's: linear above it.
            dt = F.softplus(dt_raw.to(self.state_dtype()) + self.dt_bias.to(self.state_dtype()))  # [B, T, H]
            if T == 1:
                y1, new_ssm = ssd_step(x[:, 0], dt[:, 0], A, Bm[:, 0], Cm[:, 0], ssm, reset[:, 0])
                y = y1.unsqueeze(1)
            else:
                y, new_ssm = ssd_chunk_scan(x, dt, A, Bm, Cm, ssm, reset, self.chunk_size)
        y = y.to(x.dtype) + x * self.D.to(x.dtype)[:, None]
        y = self.norm(y.reshape(batch, T, self.d_inner), z)
        return self.out_proj(y), (new_window, new_ssm.to(self.state_dtype()))
