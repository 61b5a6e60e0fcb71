"""The agent network: `build_model(cfg, num_actions)` and per-block gradient norms.

Interface (TorchBeast-style):
    model.initial_state(B, device) -> state, a tuple of tensors (zeros), batch on dim 0 for every core
        mamba: (conv window [B, d_conv-1, conv_dim], SSM state [B, H, P, N]), float32
        lstm:  (h [B, 1, d_model], c [B, 1, d_model]);  none: ()
    model(inputs, state) -> (outputs, new_state)
        inputs [T, B, ...] as the env server delivers them (extra keys ignored); done[t] zeroes the state before
        step t. outputs: policy_logits [T, B, A], baseline [T, B], action [T, B] (sampled in train(), argmax in
        eval()). Acting is the same call with T = 1.
    model.parameter_groups() -> {vision, audio, action, core, policy_head, critic_head: [params]}
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from beast.config import Config
from beast.envs.tasks import is_multitask
from beast.model.agent import GROUPS, ViciousTwinMAMBA

__all__ = ["GROUPS", "ViciousTwinMAMBA", "block_grad_norms", "build_model"]


def build_model(cfg: Config, num_actions: int, available: np.ndarray | torch.Tensor | None = None) -> ViciousTwinMAMBA:
    """The agent `cfg` describes (core, widths, Mamba backend), on the CPU; move it with `.to(device)`.
    `available` [K, A] bool: each task's buttons in a multi-task run (`ActionSpace.available`); None for one task."""
    if available is None and is_multitask(cfg):
        raise ValueError("a multi-task model needs each task's available actions (ActionSpace.available).")
    mask = None if available is None or not is_multitask(cfg) else torch.as_tensor(available, dtype=torch.bool)
    return ViciousTwinMAMBA(cfg, num_actions, mask)


def block_grad_norms(model: nn.Module) -> dict[str, torch.Tensor]:
    """L2 norm of `.grad` over each parameter group, as 0-d tensors on the model's device (zero for a group
    without gradients), so that a caller logging many statistics fetches them all in one synchronisation."""
    norms: dict[str, torch.Tensor] = {}
    for name, params in model.parameter_groups().items():  # type: ignore[operator]
        grads = [p.grad.detach() for p in params if p.grad is not None]
        norms[name] = (
            torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            if grads
            else torch.zeros(())
        )
    return norms
