"""The SSD (Mamba2) scan in plain PyTorch: a chunked sequence scan with episode resets, and a single-step update.

Both compute the same recurrence, per batch row b, head h, time t (ngroups = 1, so B and C are shared by heads):

    h_t = [not reset_t] * exp(dt_t * A) * h_{t-1} + dt_t * x_t B_t^T        h: [P, N]
    y_t = h_t C_t                                                          y: [P]

`reset_t` zeroes the state *before* step t (step t begins a new episode). This is the reference path: it runs on
any device and in float64 for the exactness tests; on CUDA the Triton kernel of mamba-ssm computes the same thing
(`beast.model.mamba2`). D (skip) and the z gate are applied by the caller, as in mamba_ssm's Mamba2 module.

The chunked scan follows the SSD decomposition (Dao & Gu, 2024): inside a chunk of L steps the output is a masked
L x L "attention" with decays; chunks talk only through their [H, P, N] states, passed with a short loop over the
T / L chunks. Resets enter as segment masks: with `seg = cumsum(reset)`, step j feeds step i only when
seg[j] == seg[i], and the initial state feeds only the steps with seg == 0 (the kernel's `seq_idx` convention).
"""

# ruff: noqa: N803 -- the SSD paper's names (A, B, C) kept so the code reads against its equations

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # The scan accumulates decays over up to T steps: never do that below float32 (bf16 autocast inputs).
    return torch.promote_types(dtype, torch.float32)


def ssd_chunk_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    h0: torch.Tensor,
    reset: torch.Tensor,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scan a [B, T] batch from `h0`, with resets, chunk by chunk.

    Args:
        x: [B, T, H, P] inputs. dt: [B, T, H] positive step sizes (softplus already applied).
        A: [H] negative decay rates. B, C: [B, T, N] input/output projections (one group).
        h0: [B, H, P, N] state before step 0. reset: [B, T] bool, true where the state is zeroed before step t.
        chunk_size: L; chunks longer than T are cut to T (same result, less padding).

    Returns:
        y: [B, T, H, P] in the compute dtype (>= float32), and the final state [B, H, P, N] after step T-1.
    """
    batch, T, H, P = x.shape
    N = B.shape[-1]
    cdt = _compute_dtype(torch.promote_types(x.dtype, h0.dtype))
    x, dt, A, B, C, h0 = (t.to(cdt) for t in (x, dt, A, B, C, h0))
    L = max(1, min(chunk_size, T))
    nc = math.ceil(T / L)
    pad = nc * L - T

    seg = torch.cumsum(reset.to(torch.long), dim=1)  # [B, T]
    log_decay = dt * A  # [B, T, H], <= 0
    xdt = x * dt.unsqueeze(-1)  # [B, T, H, P]
    if pad:
        # Padded steps have dt = 0: decay exp(0) = 1 and no input, so they leave the state as it was; their
        # segment id repeats the last one so they never look like a reset.
        log_decay = F.pad(log_decay, (0, 0, 0, pad))
        xdt = F.pad(xdt, (0, 0, 0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, pad))
        seg = torch.cat([seg, seg[:, -1:].expand(batch, pad)], dim=1)

    log_decay = log_decay.view(batch, nc, L, H)
    xdt = xdt.view(batch, nc, L, H, P)
    Bc = B.view(batch, nc, L, N)
    Cc = C.view(batch, nc, L, N)
    segc = seg.view(batch, nc, L)
    cum = torch.cumsum(log_decay, dim=2)  # [B, nc, L, H]: log decay from the chunk start through step i

    # Inside a chunk: y_i += sum_{j <= i, same segment} (C_i . B_j) exp(cum_i - cum_j) dt_j x_j.
    # Masked entries become -inf before exp, so neither the value nor its gradient sees the (possibly huge)
    # positive differences above the diagonal.
    causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
    visible = causal & (segc.unsqueeze(-1) == segc.unsqueeze(-2))  # [B, nc, L(i), L(j)]
    diff = cum.unsqueeze(3) - cum.unsqueeze(2)  # [B, nc, i, j, H]
    decay = torch.exp(torch.where(visible.unsqueeze(-1), diff, torch.tensor(-math.inf, dtype=cdt, device=x.device)))
    scores = torch.einsum("bcin,bcjn->bcij", Cc, Bc).unsqueeze(-1) * decay  # [B, nc, i, j, H]
    y = torch.einsum("bcijh,bcjhp->bcihp", scores, xdt)

    # Each chunk's own contribution to the state at its end, from the steps in the chunk's last segment.
    in_last_segment = segc == segc[..., -1:]  # [B, nc, L]
    to_end = torch.exp(cum[:, :, -1:, :] - cum) * in_last_segment.unsqueeze(-1)  # [B, nc, L, H]
    chunk_states = torch.einsum("bcjn,bcjh,bcjhp->bchpn", Bc, to_end, xdt)  # [B, nc, H, P, N]

    # The state entering chunk c survives it only if no reset happens inside chunk c. seg_before[c] is the segment
    # of the step just before chunk c (0 before the first chunk: the initial state's segment).
    seg_end = segc[..., -1]  # [B, nc]
    seg_before = torch.cat([torch.zeros_like(seg_end[:, :1]), seg_end[:, :-1]], dim=1)
    carry = torch.exp(cum[:, :, -1, :]) * (seg_end == seg_before).unsqueeze(-1)  # [B, nc, H]
    h = h0
    entering = []
    for c in range(nc):  # a loop over T / L chunks, not over steps
        entering.append(h)
        h = h * carry[:, c, :, None, None] + chunk_states[:, c]
    states_in = torch.stack(entering, dim=1)  # [B, nc, H, P, N]

    # The entering state reaches step i of the chunk decayed by exp(cum_i), unless a reset came first.
    from_start = torch.exp(cum) * (segc == seg_before.unsqueeze(-1)).unsqueeze(-1)  # [B, nc, L, H]
    y = y + torch.einsum("bcin,bchpn,bcih->bcihp", Cc, states_in, from_start)
    return y.reshape(batch, nc * L, H, P)[:, :T], h


def ssd_step(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    h: torch.Tensor,
    reset: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the recurrence: x [B, H, P], dt [B, H], A [H], B/C [B, N], h [B, H, P, N], reset [B] bool.

    Returns y [B, H, P] and the new state [B, H, P, N], both in the compute dtype (>= float32).
    """
    cdt = _compute_dtype(torch.promote_types(x.dtype, h.dtype))
    x, dt, A, B, C, h = (t.to(cdt) for t in (x, dt, A, B, C, h))
    # where, not a multiply: a reset must clear the state even if it held inf/NaN.
    h = torch.where(reset[:, None, None, None], torch.zeros((), dtype=cdt, device=h.device), h)
    decay = torch.exp(dt * A)  # [B, H]
    h = h * decay[:, :, None, None] + (x * dt.unsqueeze(-1)).unsqueeze(-1) * B[:, None, None, :]
    y = torch.einsum("bhpn,bn->bhp", h, C)
    return y, h
