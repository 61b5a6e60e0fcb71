"""The acting policies the batcher runs: the model's inference copy (with weight publishing), or uniform random.

The learner trains its own model; the batcher acts with a separate inference copy on the same device. Publishing
copies the learner's weights into that copy under a lock the batcher also holds while it runs a forward pass, so a
step never mixes two versions, and the version number of the weights that acted is returned with every step. A
copy per update costs one parameter-sized memcpy; sharing the learner's tensors instead would let the optimiser
change weights in the middle of an acting forward pass. The copy is written in place, so a compiled forward
(`CompiledActing`), which reads the parameters as inputs, acts with each new version without recompiling.
"""

from __future__ import annotations

import threading
import typing
from collections.abc import Callable, Mapping
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from beast.config import Config
from beast.learn.precision import autocast_dtype, autocast_to
from beast.learn.techniques import in_critic_warmup, perturb_logits

State = tuple[torch.Tensor, ...]


class Policy(Protocol):
    """What the batcher needs: recurrent state for N envs, one step for a batch of them, and a warm-up it runs on
    stand-in batches before the first real one (while it keeps the servers alive)."""

    def initial_state(self, num_envs: int, device: torch.device) -> State: ...

    def warm_up(self, inputs: Mapping[str, torch.Tensor], state: State) -> None: ...

    def act(self, inputs: Mapping[str, torch.Tensor], state: State) -> tuple[torch.Tensor, torch.Tensor, State, int]:
        """inputs [1, n, ...] -> (logits [n, A] sampled from, actions [n] int64, new state, policy version)."""
        ...


class PolicyWeights:
    """The inference copy of the model and its version; `publish` is the learner's side, `lock` the batcher's."""

    def __init__(self, model: nn.Module, version: int = 0) -> None:
        self.model = model.eval()  # eval: the model's own argmax is cheap; the batcher samples itself
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.version = version
        self.lock = threading.Lock()

    def publish(self, source: nn.Module, version: int) -> None:
        """Copy `source`'s weights into the inference copy and make them version `version`."""
        state = source.state_dict()
        with self.lock, torch.no_grad():
            self.model.load_state_dict(state)
            self.version = version


Forward = Callable[[Mapping[str, torch.Tensor], State], tuple[dict[str, torch.Tensor], State]]


class CompiledActing:
    """The model's acting forward through `torch.compile`, for batches of any size, with the eager one's outputs
    in the same arithmetic.

    Why: on the CPU the eager T=1 step at the batcher's sizes (4-16 envs a call) is mostly per-operator overhead;
    compiled (inductor, one thread) it ran 2.1x faster at 13 envs, and training 21% faster (docs/benchmarks.md,
    "Compiled acting"). The batch dim is marked dynamic and every other dim static, so that the batcher's warm-up
    compiles all it will need (a compile takes 20-60 s): one graph below 16 envs, one from 16 on (torch's
    convolution takes another layout there). A batch of one env, which torch would specialise into a third graph
    (it does for any dim of size 1), runs as two copies of itself and keeps the first.

    `dtype` (bf16, or None for the parameters' float32) is the autocast the forward runs under, the learner's own
    (`ModelPolicy`); the scan, the norms, the heads and the state stay float32 as in the learner.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype | None = None) -> None:
        self._compiled = typing.cast(Forward, torch.compile(model))
        self.dtype = dtype

    def __call__(self, inputs: Mapping[str, torch.Tensor], state: State) -> tuple[dict[str, torch.Tensor], State]:
        one = inputs["done"].shape[1] == 1
        if one:
            inputs = {key: torch.cat([value, value], dim=1) for key, value in inputs.items()}
            state = tuple(torch.cat([s, s]) for s in state)
        for value in inputs.values():
            torch._dynamo.mark_dynamic(value, 1)
        for s in state:
            torch._dynamo.mark_dynamic(s, 0)
        with autocast_to(self.dtype, "cpu"):
            outputs, new_state = self._compiled(inputs, state)
        if one:
            return {key: value[:, :1] for key, value in outputs.items()}, tuple(s[:1] for s in new_state)
        return outputs, new_state


class ModelPolicy:
    """Acts with the inference copy: T=1 forward (compiled on the CPU unless `--no-compile-acting`), optional
    warm-up logit noise, sampling from the (noised) logits.

    Compiled, the forward computes in the learner's precision (`--precision`), eager in float32:
    `beast.learn.precision` says why, with the figures."""

    def __init__(self, weights: PolicyWeights, cfg: Config, frames_seen: Callable[[], int], seed: int = 0) -> None:
        self.weights = weights
        self.cfg = cfg
        self.frames_seen = frames_seen
        device = next(weights.model.parameters()).device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.compiled = cfg.compile_acting and device.type == "cpu"
        self.forward: Forward = (
            CompiledActing(weights.model, autocast_dtype(cfg.precision, device)) if self.compiled else weights.model
        )

    def initial_state(self, num_envs: int, device: torch.device) -> State:
        return tuple(self.weights.model.initial_state(num_envs, device))  # type: ignore[operator]

    def warm_up(self, inputs: Mapping[str, torch.Tensor], state: State) -> None:
        """Compile the forward (nothing to do for an eager one): the first call of a compiled one takes ~20-60 s."""
        if self.compiled:
            with self.weights.lock, torch.no_grad():
                self.forward(inputs, state)

    def act(self, inputs: Mapping[str, torch.Tensor], state: State) -> tuple[torch.Tensor, torch.Tensor, State, int]:
        with self.weights.lock, torch.no_grad():
            outputs, new_state = self.forward(inputs, state)
            version = self.weights.version
        logits = outputs["policy_logits"][0].float()
        noise = self.cfg.warmup_logit_noise
        if noise > 0 and in_critic_warmup(self.frames_seen(), self.cfg):
            # mu is the perturbed distribution: it is what the action is drawn from, so it is what gets recorded.
            logits = perturb_logits(logits, noise, self.generator)
        actions = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=self.generator).squeeze(1)
        return logits, actions, tuple(new_state), version


class RandomPolicy:
    """Uniform random actions, no model: the trivial policy of the system benchmark (and a random baseline)."""

    def __init__(self, num_actions: int, seed: int = 0) -> None:
        self.num_actions = num_actions
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)

    def initial_state(self, num_envs: int, device: torch.device) -> State:
        return ()

    def warm_up(self, inputs: Mapping[str, torch.Tensor], state: State) -> None:
        """Nothing to prepare."""

    def act(self, inputs: Mapping[str, torch.Tensor], state: State) -> tuple[torch.Tensor, torch.Tensor, State, int]:
        n = inputs["done"].shape[1]
        actions = torch.randint(self.num_actions, (n,), generator=self.generator)
        return torch.zeros(n, self.num_actions), actions, state, 0
