"""GPU only: the Triton path (mamba-ssm's mamba_chunk_scan_combined) against the PyTorch reference path.

Skipped cleanly without CUDA or without the kernel. TF32 would make fp32 matmuls differ at ~1e-3, so the Triton
kernels are asked for IEEE fp32 (TRITON_F32_DEFAULT, read when a kernel is compiled) and torch's own TF32 is off.
A partial mamba-ssm build (MAMBA_SKIP_CUDA_BUILD) is made importable by the bench harness's stub; see docs/gpu.md.
"""

from __future__ import annotations

import os

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)

os.environ.setdefault("TRITON_F32_DEFAULT", "ieee")

from beast.bench.model import prepare_mamba_ssm_import  # noqa: E402
from beast.model.mamba2 import Mamba2, load_kernel  # noqa: E402

prepare_mamba_ssm_import()
if load_kernel()[0] is None:
    pytest.skip(f"mamba-ssm Triton kernel unavailable: {load_kernel()[1]}", allow_module_level=True)

DEVICE = torch.device("cuda")


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def twin_blocks(chunk_size: int) -> tuple[Mamba2, Mamba2]:
    torch.manual_seed(0)
    kw = dict(d_state=16, d_conv=4, expand=2, headdim=32, chunk_size=chunk_size)
    triton = Mamba2(64, backend="cuda", **kw).to(DEVICE)
    reference = Mamba2(64, backend="torch", **kw).to(DEVICE)
    reference.load_state_dict(triton.state_dict())
    return triton, reference


def resets(batch: int, length: int) -> torch.Tensor:
    B, T = batch, length
    reset = torch.zeros(B, T, dtype=torch.bool, device=DEVICE)
    reset[0, 0] = True
    reset[1, [7, 8]] = True  # back to back
    reset[2, 16] = True  # on a chunk boundary for chunk 16
    reset[3, T - 1] = True
    return reset


@pytest.mark.parametrize("chunk_size", [16, 64])
@pytest.mark.parametrize("length", [32, 45])
def test_triton_path_matches_reference(chunk_size: int, length: int) -> None:
    T = length
    triton, reference = twin_blocks(chunk_size)
    B = 5
    g = torch.Generator(device=DEVICE).manual_seed(1)
    u = torch.randn(B, T, 64, device=DEVICE, generator=g, requires_grad=True)
    window, ssm = (torch.randn(s.shape, device=DEVICE, generator=g) for s in triton.initial_state(B, DEVICE))
    window.requires_grad_(True)
    ssm.requires_grad_(True)
    reset = resets(B, T)
    assert triton.uses_kernel(DEVICE) and not reference.uses_kernel(DEVICE)

    results = []
    for block in (triton, reference):
        y, (w, h) = block(u, (window, ssm), reset)
        grads = torch.autograd.grad(
            y.pow(2).sum() + h.pow(2).sum() + w.sum(), [u, window, ssm, *block.parameters()], allow_unused=True
        )
        results.append((y, w, h, grads))
    (y_t, w_t, h_t, g_t), (y_r, w_r, h_r, g_r) = results
    torch.testing.assert_close(y_t, y_r, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(w_t, w_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h_t, h_r, rtol=1e-4, atol=1e-4)
    for a, b in zip(g_t, g_r, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_triton_sequence_equals_stepwise_acting() -> None:
    triton, _ = twin_blocks(16)
    B, T = 4, 20
    g = torch.Generator(device=DEVICE).manual_seed(2)
    u = torch.randn(B, T, 64, device=DEVICE, generator=g)
    state = tuple(torch.randn(s.shape, device=DEVICE, generator=g) for s in triton.initial_state(B, DEVICE))
    reset = resets(B, T)
    with torch.no_grad():
        y_seq, (w_seq, h_seq) = triton(u, state, reset)
        ys, s = [], state
        for t in range(T):
            y, s = triton(u[:, t : t + 1], s, reset[:, t : t + 1])
            ys.append(y)
    torch.testing.assert_close(y_seq, torch.cat(ys, dim=1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(h_seq, s[1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(w_seq, s[0], rtol=1e-5, atol=1e-5)


def test_bf16_autocast_runs_and_keeps_fp32_state() -> None:
    triton, reference = twin_blocks(64)
    B, T = 4, 32
    u = torch.randn(B, T, 64, device=DEVICE)
    state = triton.initial_state(B, DEVICE)
    reset = resets(B, T)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y_t, (w_t, h_t) = triton(u, state, reset)
        y_r, _ = reference(u, state, reset)
    assert w_t.dtype == h_t.dtype == torch.float32
    torch.testing.assert_close(y_t.float(), y_r.float(), rtol=5e-2, atol=5e-2)
