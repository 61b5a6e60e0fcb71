"""The Mamba2 block: the learner's sequence pass equals the actors' step-by-step pass, state included (float64)."""

from __future__ import annotations

import pytest
import torch

from beast.config import ConfigError
from beast.model.mamba2 import Mamba2

D_MODEL = 8
BATCH = 3


def make_block(chunk_size: int, d_conv: int = 4, seed: int = 0) -> Mamba2:
    torch.manual_seed(seed)
    block = Mamba2(D_MODEL, d_state=4, d_conv=d_conv, expand=2, headdim=4, chunk_size=chunk_size, backend="torch")
    block = block.double()
    with torch.no_grad():  # D = 1 and norm weight = 1 at init; perturb so a wrong use of either would show
        block.D.normal_()
        block.norm.weight.normal_()
    return block


def random_state(block: Mamba2, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    window, ssm = block.initial_state(BATCH, "cpu")
    return (
        torch.randn(window.shape, generator=g, dtype=window.dtype),
        torch.randn(ssm.shape, generator=g, dtype=ssm.dtype),
    )


def stepwise(block: Mamba2, u: torch.Tensor, state, reset: torch.Tensor):
    ys = []
    for t in range(u.shape[1]):
        y, state = block(u[:, t : t + 1], state, reset[:, t : t + 1])
        ys.append(y)
    return torch.cat(ys, dim=1), state


RESETS = {
    "none": [],
    "t0": [0],
    "back_to_back": [2, 3],
    "chunk_boundary": [4],
    "last_step": [6],
    "every_step": list(range(7)),
}


@pytest.mark.parametrize("chunk_size", [1, 4, 16])
@pytest.mark.parametrize("resets", list(RESETS), ids=list(RESETS))
def test_sequence_pass_equals_stepwise_acting(chunk_size: int, resets: str) -> None:
    T = 7  # not a multiple of 4
    block = make_block(chunk_size)
    g = torch.Generator().manual_seed(1)
    u = torch.randn(BATCH, T, D_MODEL, generator=g, dtype=torch.float64)
    reset = torch.zeros(BATCH, T, dtype=torch.bool)
    reset[0, RESETS[resets]] = True  # row 0 gets the pattern, row 1 a shifted one, row 2 none
    reset[1, [t + 1 for t in RESETS[resets] if t + 1 < T]] = True
    state = random_state(block, seed=2)
    y_seq, (win_seq, ssm_seq) = block(u, state, reset)
    y_step, (win_step, ssm_step) = stepwise(block, u, state, reset)
    torch.testing.assert_close(y_seq, y_step, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(win_seq, win_step, rtol=1e-12, atol=1e-12)  # matmul blocking differs by T
    torch.testing.assert_close(ssm_seq, ssm_step, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("d_conv", [1, 2, 4])
@pytest.mark.parametrize("length", [1, 2, 5])
def test_short_fragments_and_conv_widths(d_conv: int, length: int) -> None:
    T = length
    # T < d_conv - 1 leaves part of the old window in the new one; d_conv = 1 has an empty window.
    block = make_block(4, d_conv=d_conv)
    g = torch.Generator().manual_seed(3)
    u = torch.randn(BATCH, T, D_MODEL, generator=g, dtype=torch.float64)
    reset = torch.zeros(BATCH, T, dtype=torch.bool)
    reset[1, T - 1] = True
    state = random_state(block, seed=4)
    y_seq, s_seq = block(u, state, reset)
    y_step, s_step = stepwise(block, u, state, reset)
    torch.testing.assert_close(y_seq, y_step, rtol=1e-10, atol=1e-10)
    for a, b in zip(s_seq, s_step, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_window_holds_the_last_inputs_of_the_current_episode() -> None:
    block = make_block(4)
    g = torch.Generator().manual_seed(5)
    u = torch.randn(BATCH, 6, D_MODEL, generator=g, dtype=torch.float64)
    reset = torch.zeros(BATCH, 6, dtype=torch.bool)
    reset[0, 5] = True
    _, (window, _) = block(u, random_state(block, 6), reset)
    conv_in = block.in_proj(u)[..., block.d_inner : block.d_inner + block.conv_dim]
    torch.testing.assert_close(window[1], conv_in[1, -3:])
    torch.testing.assert_close(window[0, :2], torch.zeros_like(window[0, :2]))  # before the reset at t=5
    torch.testing.assert_close(window[0, 2], conv_in[0, 5])


def test_reset_makes_output_independent_of_initial_state() -> None:
    block = make_block(4)
    g = torch.Generator().manual_seed(7)
    u = torch.randn(BATCH, 9, D_MODEL, generator=g, dtype=torch.float64)
    reset = torch.zeros(BATCH, 9, dtype=torch.bool)
    reset[:, 5] = True
    y_a, s_a = block(u, random_state(block, 8), reset)
    y_b, s_b = block(u, random_state(block, 9), reset)
    torch.testing.assert_close(y_a[:, 5:], y_b[:, 5:], rtol=1e-12, atol=1e-12)
    for a, b in zip(s_a, s_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(y_a[:, :5], y_b[:, :5])
    y_fresh, _ = block(u[:, 5:], block.initial_state(BATCH, "cpu"), reset[:, 5:])
    torch.testing.assert_close(y_a[:, 5:], y_fresh, rtol=1e-10, atol=1e-10)


def test_gradcheck_inputs_and_initial_state() -> None:
    block = make_block(2)
    g = torch.Generator().manual_seed(10)
    u = torch.randn(2, 5, D_MODEL, generator=g, dtype=torch.float64, requires_grad=True)
    window, ssm = (torch.randn(s[:2].shape, generator=g, dtype=torch.float64) for s in random_state(block, 11))
    window.requires_grad_(True)
    ssm.requires_grad_(True)
    reset = torch.tensor([[False, False, True, False, False], [False, False, False, False, True]])

    def run(u, window, ssm):
        y, (w, h) = block(u, (window, ssm), reset)
        return y, w, h

    assert torch.autograd.gradcheck(run, (u, window, ssm))


def test_parameter_names_follow_mamba_ssm() -> None:
    names = {name for name, _ in make_block(4).named_parameters()}
    assert names == {
        "in_proj.weight",
        "conv1d.weight",
        "conv1d.bias",
        "dt_bias",
        "A_log",
        "D",
        "norm.weight",
        "out_proj.weight",
    }


def test_state_is_float32_for_a_float32_model() -> None:
    block = Mamba2(D_MODEL, d_state=4, expand=2, headdim=4, backend="torch")
    window, ssm = block.initial_state(2, "cpu")
    assert window.dtype == ssm.dtype == torch.float32
    assert window.shape == (2, 3, block.conv_dim) and ssm.shape == (2, block.nheads, 4, 4)
    assert not window.any() and not ssm.any()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, (w, h) = block(torch.randn(2, 6, D_MODEL), (window, ssm), torch.zeros(2, 6, dtype=torch.bool))
    assert w.dtype == h.dtype == torch.float32
    assert torch.isfinite(y).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_forced_cuda_backend_fails_loudly_without_cuda() -> None:
    with pytest.raises(ConfigError, match="--mamba-backend=cuda"):
        Mamba2(D_MODEL, d_state=4, expand=2, headdim=4, backend="cuda")


def test_torch_backend_never_uses_the_kernel() -> None:
    block = make_block(4)
    assert not block.uses_kernel(torch.device("cpu"))
    assert not block.uses_kernel(torch.device("cuda"))
