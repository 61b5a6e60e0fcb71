"""ViciousTwinMAMBA end to end: the model interface the runtime and the learner rely on."""

from __future__ import annotations

import pytest
import torch

from beast.model import GROUPS, block_grad_norms, build_model

CORES = ["mamba", "lstm", "none"]


def make_model(make_config, num_actions: int, core: str = "mamba", **overrides):
    torch.manual_seed(0)
    return build_model(make_config(core=core, **overrides), num_actions).double()


@pytest.mark.parametrize("core", CORES)
def test_sequence_pass_equals_stepwise_acting(core: str, make_config, make_inputs, make_state, gen, num_actions):
    model = make_model(make_config, num_actions, core).eval()
    T, B = 7, 3
    done = torch.zeros(T, B, dtype=torch.bool)
    done[0, 0] = done[3, 1] = done[4, 1] = done[4, 2] = done[6, 0] = True
    inputs = make_inputs(T, B, gen, done=done)
    state = make_state(model.initial_state(B, "cpu"), gen)
    out_seq, s_seq = model(inputs, state)
    steps = []
    s_step = state
    for t in range(T):
        out, s_step = model({k: v[t : t + 1] for k, v in inputs.items()}, s_step)
        steps.append(out)
    for key in ("policy_logits", "baseline"):
        torch.testing.assert_close(out_seq[key], torch.cat([o[key] for o in steps]), rtol=1e-9, atol=1e-9)
    assert torch.equal(out_seq["action"], torch.cat([o["action"] for o in steps]))  # eval: argmax
    for a, b in zip(s_seq, s_step, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_outputs_shapes_and_dtypes(make_config, make_inputs, gen, num_actions) -> None:
    model = build_model(make_config(), num_actions)
    T, B = 4, 2
    inputs = make_inputs(T, B, gen)
    out, state = model(inputs, model.initial_state(B, "cpu"))
    assert out["policy_logits"].shape == (T, B, num_actions) and out["policy_logits"].dtype == torch.float32
    assert out["baseline"].shape == (T, B)
    assert out["action"].shape == (T, B) and out["action"].dtype == torch.int64
    assert ((out["action"] >= 0) & (out["action"] < num_actions)).all()
    assert all(s.dtype == torch.float32 and s.shape[0] == B for s in state)


def test_extra_input_keys_are_ignored(make_config, make_inputs, gen, num_actions) -> None:
    model = make_model(make_config, num_actions).eval()
    inputs = make_inputs(3, 2, gen)
    extra = dict(inputs, action=torch.zeros(3, 2, dtype=torch.long), policy_logits=torch.randn(3, 2, 5))
    extra["policy_version"] = torch.ones(3, 2, dtype=torch.long)
    state = model.initial_state(2, "cpu")
    a, _ = model(inputs, state)
    b, _ = model(extra, state)
    torch.testing.assert_close(a["policy_logits"], b["policy_logits"])


def test_train_samples_and_eval_takes_argmax(make_config, make_inputs, gen, num_actions) -> None:
    model = make_model(make_config, num_actions)
    with torch.no_grad():  # a uniform policy: sampling must spread, argmax must stay put
        model.policy_head[-1].weight.zero_()
        model.policy_head[-1].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 1e-6]))
    inputs = make_inputs(1, 64, gen)
    state = model.initial_state(64, "cpu")
    model.eval()
    out, _ = model(inputs, state)
    assert torch.all(out["action"] == 4)
    model.train()
    out, _ = model(inputs, state)
    assert len(out["action"].unique()) >= 3


def test_logit_lower_bound_clamps_inside_the_model(make_config, make_inputs, gen, num_actions) -> None:
    model = make_model(make_config, num_actions, logit_lower_bound=-2.0)
    with torch.no_grad():
        model.policy_head[-1].bias.copy_(torch.tensor([-50.0, 0.0, 0.0, 0.0, 0.0]))
    out, _ = model(make_inputs(2, 3, gen), model.initial_state(3, "cpu"))
    logits = out["policy_logits"]
    assert torch.all(logits[..., 0] == -2.0)
    assert torch.all(logits >= -2.0)
    logits.sum().backward()
    bias_grad = model.policy_head[-1].bias.grad
    assert bias_grad is not None
    assert bias_grad[0] == 0 and torch.all(bias_grad[1:] != 0)  # no gradient where clamped, full elsewhere


def test_parameter_groups_cover_every_parameter_once(make_config, num_actions) -> None:
    for core in CORES:
        model = build_model(make_config(core=core), num_actions)
        groups = model.parameter_groups()
        assert tuple(groups) == GROUPS == ("vision", "audio", "action", "core", "policy_head", "critic_head")
        ids = [id(p) for params in groups.values() for p in params]
        assert len(ids) == len(set(ids))
        assert set(ids) == {id(p) for p in model.parameters()}
        assert all(groups[name] for name in GROUPS)


@pytest.mark.parametrize("core", CORES)
def test_gradients_reach_every_block(core: str, make_config, make_inputs, make_state, gen, num_actions) -> None:
    model = make_model(make_config, num_actions, core)
    assert {k: float(v) for k, v in block_grad_norms(model).items()} == dict.fromkeys(GROUPS, 0.0)
    done = torch.zeros(4, 2, dtype=torch.bool)
    done[2, 0] = True
    state = make_state(model.initial_state(2, "cpu"), gen)
    out, _ = model(make_inputs(4, 2, gen, done=done), state)
    (out["policy_logits"].pow(2).sum() + out["baseline"].pow(2).sum()).backward()
    norms = block_grad_norms(model)
    assert set(norms) == set(GROUPS)
    assert all(norms[name] > 0 for name in GROUPS), norms
    expected = sum(p.grad.pow(2).sum() for p in model.policy_head.parameters()).sqrt()
    assert float(norms["policy_head"]) == pytest.approx(float(expected))


def test_enemy_mask_changes_the_output(make_config, make_inputs, gen, num_actions) -> None:
    model = make_model(make_config, num_actions).eval()
    inputs = make_inputs(2, 2, gen)
    state = model.initial_state(2, "cpu")
    with_enemy = dict(inputs, enemy=torch.zeros_like(inputs["enemy"]))
    with_enemy["enemy"][..., 20:40, 20:40] = 1
    without, _ = model(dict(inputs, enemy=torch.zeros_like(inputs["enemy"])), state)
    seen, _ = model(with_enemy, state)
    assert not torch.allclose(without["policy_logits"], seen["policy_logits"])
    assert not torch.allclose(without["baseline"], seen["baseline"])


@pytest.mark.parametrize("core", CORES)
def test_no_nan_on_all_zero_or_extreme_inputs(core: str, make_config, make_inputs, gen, num_actions) -> None:
    model = build_model(make_config(core=core), num_actions)  # float32, as it runs
    T, B = 5, 2
    inputs = make_inputs(T, B, gen)
    zero = {k: torch.zeros_like(v) for k, v in inputs.items()}
    extreme = {
        "rgb": torch.full_like(inputs["rgb"], 255),
        "depth": torch.full_like(inputs["depth"], 255),
        "enemy": torch.ones_like(inputs["enemy"]),
        "audio": torch.where(torch.rand(T, B, 2, 1024, generator=gen) < 0.5, -32768, 32767).to(torch.int16),
        "last_action": torch.full_like(inputs["last_action"], num_actions - 1),
        "reward": torch.full_like(inputs["reward"], 1e30),
        "done": torch.ones_like(inputs["done"]),
    }
    for batch in (zero, extreme):
        model.zero_grad()
        out, state = model(batch, model.initial_state(B, "cpu"))
        (out["policy_logits"].sum() + out["baseline"].sum()).backward()
        assert torch.isfinite(out["policy_logits"]).all() and torch.isfinite(out["baseline"]).all()
        assert all(torch.isfinite(s).all() for s in state)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_an_episode_start_reads_the_start_token_and_no_reward(make_config, make_inputs, gen, num_actions) -> None:
    model = build_model(make_config(core="none"), num_actions).eval()
    T, B = 3, 4
    inputs = make_inputs(T, B, gen)
    inputs["done"] = torch.tensor([[True] * B, [False] * B, [True] * B])
    other = dict(inputs)
    other["last_action"] = (inputs["last_action"] + 1) % num_actions
    other["reward"] = inputs["reward"] + 0.5
    state = model.initial_state(B, "cpu")
    a, _ = model(inputs, state)
    b, _ = model(other, state)
    starts = inputs["done"]
    # Where an episode starts, the previous action and reward (the last episode's) are not seen...
    torch.testing.assert_close(a["policy_logits"][starts], b["policy_logits"][starts])
    # ...elsewhere they are, and the start token is not action 0.
    assert not torch.allclose(a["policy_logits"][~starts], b["policy_logits"][~starts])
    zero = dict(inputs, done=torch.zeros(T, B, dtype=torch.bool), last_action=torch.zeros(T, B, dtype=torch.int64))
    zero["reward"] = torch.zeros(T, B)
    c, _ = model(zero, state)
    assert not torch.allclose(a["policy_logits"][starts], c["policy_logits"][starts])


def _dtypes_seen(model, modules: dict[str, torch.nn.Module], inputs, state) -> dict[str, torch.dtype]:
    seen: dict[str, torch.dtype] = {}
    hooks = [
        module.register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(name, out.dtype))
        for name, module in modules.items()
    ]
    model(inputs, state)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("core", CORES)
def test_under_autocast_the_trunk_runs_in_bf16_and_the_heads_in_float32(
    core, make_config, make_inputs, gen, num_actions
):
    """The learner's `--precision` wraps the model in autocast: the trunk takes it, the heads and state do not."""
    torch.manual_seed(0)
    model = build_model(make_config(core=core), num_actions).eval()
    T, B = 5, 3
    inputs = make_inputs(T, B, gen)
    state = model.initial_state(B, "cpu")
    watched = {"conv": model.vision.conv1, "fuse": model.core.fuse, "logits": model.policy_head[-1]}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        seen = _dtypes_seen(model, watched, inputs, state)
        out16, state16 = model(inputs, state)
    assert seen == {"conv": torch.bfloat16, "fuse": torch.bfloat16, "logits": torch.float32}
    assert set(_dtypes_seen(model, watched, inputs, state).values()) == {torch.float32}
    out32, state32 = model(inputs, state)
    assert out16["policy_logits"].dtype == out16["baseline"].dtype == torch.float32
    assert [s.dtype for s in state16] == [s.dtype for s in state32]  # the batcher and buffers hold float32
    # The same weights: bf16 rounding (8 bits of mantissa) moves the outputs a little, not to another policy.
    torch.testing.assert_close(out16["policy_logits"], out32["policy_logits"], atol=2e-2, rtol=0)
    torch.testing.assert_close(out16["baseline"], out32["baseline"], atol=5e-2, rtol=0)
    assert not torch.equal(out16["baseline"], out32["baseline"])  # bf16 did run: the rounding shows


def test_under_autocast_the_raw_inputs_go_straight_to_bf16_with_the_values_a_cast_would_give(
    make_config, make_inputs, gen, num_actions
):
    """The organs convert the learner's uint8 pixels and int16 audio into bf16 themselves: no float32 copy of the
    batch for autocast to cast (a quarter of the CPU learner's step), and not one value different from that cast."""
    model = build_model(make_config(), num_actions).eval()
    T, B = 2, 3
    inputs = make_inputs(T, B, gen)
    inputs["rgb"][0, 0].view(-1)[:256] = torch.arange(256, dtype=torch.uint8)  # every pixel value, at least once
    first = {"pixels": model.vision.conv1, "mask": model.vision.mask_conv, "audio": model.audio.convs[0]}
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        layer.register_forward_pre_hook(lambda _m, args, name=name: seen.__setitem__(name, args[0]))
        for name, layer in first.items()
    ]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(inputs, model.initial_state(B, "cpu"))
    for hook in hooks:
        hook.remove()
    assert {name: x.dtype for name, x in seen.items()} == dict.fromkeys(first, torch.bfloat16)
    rgbd = torch.cat([inputs["rgb"], inputs["depth"]], dim=2).flatten(0, 1)
    assert torch.equal(seen["pixels"], (rgbd.float() / 255.0).to(torch.bfloat16))
    assert torch.equal(seen["mask"], inputs["enemy"].flatten(0, 1).to(torch.bfloat16))
    assert torch.equal(seen["audio"], (inputs["audio"].flatten(0, 1).float() / 32768.0).to(torch.bfloat16))
