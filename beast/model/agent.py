"""ViciousTwinMAMBA: organs -> fused features -> recurrent core -> policy and critic heads.

`model(inputs, state) -> (outputs, new_state)` with every input [T, B, ...] exactly as the env server delivers
it; acting is the same call with T = 1. Extra keys in `inputs` (the learner passes its whole batch) are ignored.
The core input is [vision, audio, action embedding, reward], as TorchBeast feeds the reward and last action to
its core. The reward is the training reward (already scaled by the runtime, `beast.envs.shaping`), clamped to
[-1, 1] so that a rare large one cannot dominate the features. At an episode's first step (`done`) there is no
previous action or reward: the action input is a dedicated start token (index `num_actions`) and the reward 0,
whatever the rollout holds there (the ended episode's last reward, which the learner needs).

The critic's last layer outputs a PopArt-normalised value (`beast.model.popart`): `baseline` is the value in
reward units, `sigma * n + mu` of the layer's output n.

Multi-task (`beast.envs.tasks`): `inputs["task"]` [T, B] names each env's task. The critic has one output per
task, each with its own PopArt statistics (Hessel et al. 2019: no task's reward scale sets another's), and the
task's row of `available` [K, A] masks the logits of the buttons its scenario lacks (`MASKED_LOGIT`); `outputs`
then carries that mask as `available` [T, B, A] for the exploration loss. The policy itself is not told the task:
as in IMPALA's multi-task agent, it tells the tasks apart by what it sees.

Under autocast (the learner's `--precision`, `beast.learn.precision`) the organs and the core run in bf16; the
scan, the norms and the heads stay in float32, so the logits, values and state are float32 either way.

The recurrent state's batch dim is 0 for every core (`beast.model.cores` lists the tensors).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from beast.config import Config
from beast.envs.tasks import MASKED_LOGIT
from beast.model.cores import State, build_core
from beast.model.organs import ActionOrgan, AudioOrgan, VisionOrgan
from beast.model.popart import PopArt

GROUPS = ("vision", "audio", "action", "core", "policy_head", "critic_head")


def mlp_head(in_dim: int, hidden: int, out_dim: int, last_gain: float = 1.0) -> nn.Sequential:
    """LayerNorm -> Linear -> ReLU -> Linear. The norm holds the core's output at one scale for the whole run (it
    grew 4-fold in 250k frames without it, and the logits' speed under Adam with it; see `organs`)."""
    last = nn.Linear(hidden, out_dim)
    with torch.no_grad():
        last.weight.mul_(last_gain)
        last.bias.zero_()
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.ReLU(), last)


class ViciousTwinMAMBA(nn.Module):
    """The seed's agent; `cfg.core` picks the core (mamba, lstm, none), the rest is the same for all."""

    available: torch.Tensor | None

    def __init__(self, cfg: Config, num_actions: int, available: torch.Tensor | None = None) -> None:
        """`available` [K, A] bool: a multi-task run's mask of each task's buttons (None: one task, no mask)."""
        super().__init__()
        self.num_actions = num_actions
        self.num_tasks = 1 if available is None else int(available.shape[0])
        self.logit_lower_bound = cfg.logit_lower_bound
        audio_dim = cfg.d_model // 2
        self.vision = VisionOrgan(cfg.d_model, normalize_input=cfg.normalize_input)
        self.audio = AudioOrgan(audio_dim)
        self.start_action = num_actions  # the action input at an episode's first step
        self.action = ActionOrgan(num_actions + 1, cfg.action_embed_dim)
        self.core = build_core(cfg, cfg.d_model + audio_dim + cfg.action_embed_dim + 1)
        # A small last layer starts the policy near uniform, so early behaviour explores evenly.
        self.policy_head = mlp_head(cfg.d_model, cfg.head_hidden, num_actions, last_gain=0.01)
        self.critic_head = mlp_head(cfg.d_model, cfg.head_hidden, self.num_tasks)
        self.popart = PopArt(num_tasks=self.num_tasks, beta=cfg.popart_beta)
        # Not saved: the run's servers say which buttons each task has, and a checkpoint is played by servers too.
        self.register_buffer(
            "available", None if available is None else available.to(torch.bool).clone(), persistent=False
        )

    @property
    def value_layer(self) -> nn.Linear:
        """The critic's last layer: PopArt rescales it when the value statistics move."""
        return self.critic_head[-1]  # type: ignore[return-value]

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        """Zeros; a tuple of tensors with the batch on dim 0 (empty for core=none)."""
        return self.core.initial_state(batch_size, device)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by block: vision, audio, action, core, policy_head (actor-only), critic_head (critic-only)."""
        return {name: list(getattr(self, name).parameters()) for name in GROUPS}

    def update_input_norm(
        self,
        rgb: torch.Tensor,
        depth: torch.Tensor,
        total: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """Merge the frames rgb [T, B, 3, 64, 64], depth [T, B, 1, 64, 64] into the vision input's statistics
        (`--normalize-input`; `total` as `InputNorm.update`)."""
        self.vision.update_input_norm(rgb.flatten(0, 1), depth.flatten(0, 1), total)

    def forward(self, inputs: Mapping[str, torch.Tensor], state: State) -> tuple[dict[str, torch.Tensor], State]:
        """inputs: rgb [T,B,3,64,64] u8, depth/enemy [T,B,1,64,64] u8, audio [T,B,2,1024] i16, last_action [T,B]
        i64, reward [T,B] f32, done [T,B] bool, and in a multi-task model task [T,B] i64 -> ({policy_logits [T,B,A],
        baseline [T,B], action [T,B]; available [T,B,A] when masked}, state).
        """
        T, B = inputs["last_action"].shape
        dtype = self.action.embed.weight.dtype

        def flat(key: str) -> torch.Tensor:  # [T, B, ...] -> [T*B, ...]
            return inputs[key].reshape(T * B, *inputs[key].shape[2:])

        done = inputs["done"].to(torch.bool)
        reward = torch.where(done, 0.0, inputs["reward"].to(dtype).clamp(-1.0, 1.0)).reshape(T * B, 1)
        last_action = torch.where(done, self.start_action, inputs["last_action"]).reshape(T * B)
        features = torch.cat(
            [
                self.vision(flat("rgb"), flat("depth"), flat("enemy")),
                self.audio(flat("audio")),
                self.action(last_action),
                reward,
            ],
            dim=-1,
        )
        core_out, new_state = self.core(features.view(T, B, -1), done, state)
        # Under a caller's autocast (the learner's `--precision`) the trunk ran in bf16; the heads run in the
        # parameters' dtype with autocast off (the logits give log pi and log mu, the value layer is the one PopArt
        # rescales), and the state keeps the dtype it came in (the batcher and the buffers hold it).
        core_out = core_out.to(dtype)
        new_state = tuple(new.to(old.dtype) for new, old in zip(new_state, state, strict=True))
        with torch.autocast(core_out.device.type, enabled=False):
            logits = self.policy_head(core_out)  # [T, B, A]
            normalized = self.critic_head(core_out)  # [T, B, K]: one value per task
        if self.logit_lower_bound < 0:
            # clamp passes the gradient where a logit is above the bound and blocks it where clamped; doing it
            # here means actors sample from, and the learner scores, the same clamped logits.
            logits = logits.clamp(min=self.logit_lower_bound)
        task = inputs["task"].to(torch.int64) if self.num_tasks > 1 else None
        available = None
        if self.available is not None and task is not None:
            available = self.available[task]  # [T, B, A]
            logits = logits.masked_fill(~available, MASKED_LOGIT)
        normalized_baseline = (
            normalized.squeeze(-1) if task is None else normalized.gather(-1, task.unsqueeze(-1)).squeeze(-1)
        )

        with torch.no_grad():
            flat_logits = logits.detach().reshape(T * B, -1).float()
            if self.training:
                action = torch.multinomial(F.softmax(flat_logits, dim=-1), num_samples=1)
            else:
                action = flat_logits.argmax(dim=-1)
        outputs = {
            "policy_logits": logits,
            "baseline": self.popart.denormalize(normalized_baseline, task),
            "action": action.view(T, B),
        }
        if available is not None:
            outputs["available"] = available
        return outputs, new_state
