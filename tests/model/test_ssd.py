"""The reference SSD scan against the recurrence it implements, written out step by step (float64)."""

# ruff: noqa: N803 -- the SSD paper's names (A, B, C, T)

from __future__ import annotations

import pytest
import torch

from beast.model.ssd import ssd_chunk_scan, ssd_step

BATCH, HEADS, P, N = 2, 3, 2, 4


def naive_scan(x, dt, A, B, C, h0, reset):
    """h_t = [not reset_t] exp(dt_t A) h_{t-1} + dt_t x_t B_t^T; y_t = h_t C_t — the definition, one step at a time."""
    h = h0.clone()
    ys = []
    for t in range(x.shape[1]):
        keep = (~reset[:, t]).to(h.dtype)[:, None, None, None]
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]
        h = keep * decay * h + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, None, None, :]
        ys.append(torch.einsum("bhpn,bn->bhp", h, C[:, t]))
    return torch.stack(ys, dim=1), h


def scan_inputs(T: int, seed: int = 0, requires_grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    x = torch.randn(BATCH, T, HEADS, P, generator=g, dtype=f64)
    dt = torch.nn.functional.softplus(torch.randn(BATCH, T, HEADS, generator=g, dtype=f64))
    A = -torch.rand(HEADS, generator=g, dtype=f64) * 2 - 0.1
    B = torch.randn(BATCH, T, N, generator=g, dtype=f64)
    C = torch.randn(BATCH, T, N, generator=g, dtype=f64)
    h0 = torch.randn(BATCH, HEADS, P, N, generator=g, dtype=f64)
    tensors = [x, dt, A, B, C, h0]
    if requires_grad:
        for t in tensors:
            t.requires_grad_(True)
    return tensors


def reset_at(T: int, rows: list[list[int]]) -> torch.Tensor:
    reset = torch.zeros(BATCH, T, dtype=torch.bool)
    for b, times in enumerate(rows):
        reset[b, times] = True
    return reset


RESETS = {
    "none": [[], []],
    "t0": [[0], [0]],
    "back_to_back": [[3, 4], [2, 3, 4]],
    "chunk_boundary": [[4], [8]],
    "last_step": [[10], [1, 10]],
    "mixed": [[0, 5], []],
}


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 32])
@pytest.mark.parametrize("resets", list(RESETS), ids=list(RESETS))
def test_chunked_scan_equals_naive_loop(chunk_size: int, resets: str) -> None:
    T = 11  # not a multiple of 4 or 5
    x, dt, A, B, C, h0 = scan_inputs(T)
    reset = reset_at(T, RESETS[resets])
    y, h = ssd_chunk_scan(x, dt, A, B, C, h0, reset, chunk_size)
    y_ref, h_ref = naive_scan(x, dt, A, B, C, h0, reset)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-10)


def test_step_equals_naive_loop() -> None:
    T = 6
    x, dt, A, B, C, h0 = scan_inputs(T)
    reset = reset_at(T, [[2], [0, 5]])
    h = h0
    ys = []
    for t in range(T):
        y, h = ssd_step(x[:, t], dt[:, t], A, B[:, t], C[:, t], h, reset[:, t])
        ys.append(y)
    y_ref, h_ref = naive_scan(x, dt, A, B, C, h0, reset)
    torch.testing.assert_close(torch.stack(ys, dim=1), y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, h_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("split", [1, 4, 7])
def test_two_fragments_equal_one_pass(split: int) -> None:
    T = 12
    x, dt, A, B, C, h0 = scan_inputs(T, seed=1)
    reset = reset_at(T, [[5], [7, 8]])
    y, h = ssd_chunk_scan(x, dt, A, B, C, h0, reset, 4)
    first = slice(0, split)
    second = slice(split, T)
    y1, h1 = ssd_chunk_scan(x[:, first], dt[:, first], A, B[:, first], C[:, first], h0, reset[:, first], 4)
    y2, h2 = ssd_chunk_scan(x[:, second], dt[:, second], A, B[:, second], C[:, second], h1, reset[:, second], 4)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h2, h, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("t", [0, 3, 4, 9])
def test_reset_forgets_the_past(t: int) -> None:
    T = 10
    x, dt, A, B, C, h0 = scan_inputs(T, seed=2)
    reset = torch.zeros(BATCH, T, dtype=torch.bool)
    reset[:, t] = True
    y, h = ssd_chunk_scan(x, dt, A, B, C, h0, reset, 4)
    # A fresh run on the suffix, from a zero state, gives the same outputs and final state...
    suffix = slice(t, T)
    y_fresh, h_fresh = ssd_chunk_scan(
        x[:, suffix], dt[:, suffix], A, B[:, suffix], C[:, suffix], torch.zeros_like(h0), reset[:, suffix], 4
    )
    torch.testing.assert_close(y[:, t:], y_fresh, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h, h_fresh, rtol=1e-10, atol=1e-10)
    # ...and another initial state changes nothing from t on (but does before t).
    y_other, _ = ssd_chunk_scan(x, dt, A, B, C, h0 * 3 + 1, reset, 4)
    torch.testing.assert_close(y_other[:, t:], y[:, t:], rtol=1e-10, atol=1e-10)
    if t > 0:
        assert not torch.allclose(y_other[:, :t], y[:, :t])


def test_gradcheck_including_initial_state() -> None:
    T = 6
    inputs = scan_inputs(T, seed=3, requires_grad=True)
    reset = reset_at(T, [[3], []])
    assert torch.autograd.gradcheck(lambda *a: ssd_chunk_scan(*a[:6], reset, 4), tuple(inputs))


def test_gradients_do_not_cross_a_reset() -> None:
    T = 8
    x, dt, A, B, C, h0 = scan_inputs(T, seed=4, requires_grad=True)
    reset = reset_at(T, [[0], [5]])
    y, h = ssd_chunk_scan(x, dt, A, B, C, h0, reset, 4)
    (y[:, 5:].sum() + h.sum()).backward()
    assert h0.grad is not None and x.grad is not None
    assert torch.all(h0.grad == 0)  # row 0 resets at t=0; row 1 at t=5, and only steps >= 5 are in the loss
    assert torch.all(x.grad[1, :5] == 0)
    assert torch.any(x.grad[0, :5] != 0)


def test_no_nan_on_extreme_inputs() -> None:
    T = 9
    x, dt, A, B, C, h0 = scan_inputs(T, seed=5, requires_grad=True)
    with torch.no_grad():
        dt.mul_(0).add_(1e4)  # decays of exp(-1e4 * |A|): far past underflow
        x[:, :3].mul_(1e6)
    reset = reset_at(T, [[0, 1, 2, 3, 4, 5, 6, 7, 8], []])
    y, h = ssd_chunk_scan(x, dt, A, B, C, h0, reset, 4)
    (y.sum() + h.sum()).backward()
    for t in (y, h, x.grad, dt.grad, A.grad, B.grad, C.grad, h0.grad):
        assert torch.isfinite(t).all()
    zeros = [torch.zeros_like(t) for t in (x, dt, B, C, h0)]
    y0, h0_out = ssd_chunk_scan(zeros[0], zeros[1], A, zeros[2], zeros[3], zeros[4], reset, 4)
    assert torch.all(y0 == 0) and torch.all(h0_out == 0)
