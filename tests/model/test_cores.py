"""Every core behind one interface: [T, B, in] features, done [T, B], a state with the batch on dim 0."""

from __future__ import annotations

import pytest
import torch

from beast.model.cores import LSTMCore, build_core

IN_DIM = 6
CORES = ["mamba", "lstm", "none"]


def make_core(make_config, core: str):
    torch.manual_seed(0)
    return build_core(make_config(core=core), IN_DIM).double()


def stepwise(core, x, done, state):
    ys = []
    for t in range(x.shape[0]):
        y, state = core(x[t : t + 1], done[t : t + 1], state)
        ys.append(y)
    return torch.cat(ys), state


@pytest.mark.parametrize("name", CORES)
def test_sequence_equals_steps_from_a_random_state(name: str, make_config, make_state, gen) -> None:
    core = make_core(make_config, name)
    T, B = 9, 4
    x = torch.randn(T, B, IN_DIM, generator=gen, dtype=torch.float64)
    done = torch.zeros(T, B, dtype=torch.bool)
    done[0, 0] = done[4, 1] = done[5, 1] = done[8, 2] = True
    state = make_state(core.initial_state(B, "cpu"), gen)
    y_seq, s_seq = core(x, done, state)
    y_step, s_step = stepwise(core, x, done, state)
    torch.testing.assert_close(y_seq, y_step, rtol=1e-10, atol=1e-10)
    assert len(s_seq) == len(s_step)
    for a, b in zip(s_seq, s_step, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", CORES)
def test_state_rows_are_independent_envs(name: str, make_config, make_state, gen) -> None:
    # The runtime gathers/scatters per-env state by indexing dim 0: running rows apart must equal running together.
    core = make_core(make_config, name)
    T, B = 5, 3
    x = torch.randn(T, B, IN_DIM, generator=gen, dtype=torch.float64)
    done = torch.zeros(T, B, dtype=torch.bool)
    done[2, 1] = True
    state = make_state(core.initial_state(B, "cpu"), gen)
    y_all, s_all = core(x, done, state)
    for b in range(B):
        y_b, s_b = core(x[:, b : b + 1], done[:, b : b + 1], tuple(s[b : b + 1] for s in state))
        torch.testing.assert_close(y_b, y_all[:, b : b + 1], rtol=1e-10, atol=1e-10)
        for one, many in zip(s_b, s_all, strict=True):
            torch.testing.assert_close(one, many[b : b + 1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["mamba", "lstm"])
def test_done_zeroes_the_state_before_the_step(name: str, make_config, make_state, gen) -> None:
    core = make_core(make_config, name)
    T, B = 6, 2
    x = torch.randn(T, B, IN_DIM, generator=gen, dtype=torch.float64)
    done = torch.zeros(T, B, dtype=torch.bool)
    done[3] = True
    y_a, _ = core(x, done, make_state(core.initial_state(B, "cpu"), gen))
    y_b, _ = core(x, done, make_state(core.initial_state(B, "cpu"), gen))
    torch.testing.assert_close(y_a[3:], y_b[3:], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(y_a[:3], y_b[:3])
    y_fresh, _ = core(x[3:], done[3:], core.initial_state(B, "cpu"))
    torch.testing.assert_close(y_a[3:], y_fresh, rtol=1e-10, atol=1e-10)


def test_lstm_spans_equal_a_per_step_loop(make_config, gen) -> None:
    core = make_core(make_config, "lstm")
    assert isinstance(core, LSTMCore)
    T, B = 8, 3
    x = torch.randn(T, B, IN_DIM, generator=gen, dtype=torch.float64)
    done = torch.rand(T, B, generator=gen) < 0.3
    h, c = (s.transpose(0, 1) for s in core.initial_state(B, "cpu"))
    outs = []
    for t in range(T):  # TorchBeast's AtariNet loop, written out
        keep = (~done[t]).double().view(1, B, 1)
        out, (h, c) = core.lstm(torch.relu(core.fuse(x[t : t + 1])), (h * keep, c * keep))
        outs.append(out)
    y, (h_new, c_new) = core(x, done, core.initial_state(B, "cpu"))
    torch.testing.assert_close(y, torch.cat(outs), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_new, h.transpose(0, 1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c_new, c.transpose(0, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", CORES)
def test_initial_state_is_zeros_with_batch_first(name: str, make_config) -> None:
    core = build_core(make_config(core=name), IN_DIM)
    state = core.initial_state(5, "cpu")
    if name == "none":
        assert state == ()
    else:
        assert len(state) == 2
        assert all(s.shape[0] == 5 and s.dtype == torch.float32 and not s.any() for s in state)
