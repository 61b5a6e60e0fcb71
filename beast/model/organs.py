"""The three organs of ViciousTwinMAMBA: vision gated by the enemy mask, audio, and the last-action embedding.

Each takes one modality for N = T * B samples, raw as the env server sends it (uint8 pixels, int16 audio), and
returns a feature vector [N, out_dim]. Normalisation to [0, 1] / [-1, 1] happens here, in the parameters' dtype.

The vision and audio features end in a LayerNorm (before the ReLU). Measured on deadly_corridor: at
initialisation the vision features had an RMS of 0.014 against the action embedding's 1, so the core first saw
little but the last action, and after 250k frames of training they had grown 200-fold (RMS 2.9). Features
that grow make every Adam step (a fixed size per parameter) move the logits further, which sped up the
policy's collapse onto one action; normalised features keep one scale from the first step to the last.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from beast.model.input_norm import InputNorm
from beast.model.space_to_depth import SpaceToDepthConv2d


class VisionOrgan(nn.Module):
    """Conv stack over RGB + depth [N, 4, 64, 64]; after the first layer the features are modulated, channel by
    channel and pixel by pixel, by a conv of the enemy mask (FiLM: h * 2 sigmoid(g) + beta).

    The gate lets the network scale features where enemies are (and the shift lets it mark them even where RGB
    features are weak), so "enemy or not" is visible to everything downstream. With `normalize_input` the RGB-D
    pixels are normalised by their running statistics first (`beast.model.input_norm`); the mask is not (0/1).
    """

    def __init__(self, out_dim: int, normalize_input: bool = False) -> None:
        super().__init__()
        self.input_norm = InputNorm((4, 64, 64)) if normalize_input else None
        self.conv1 = nn.Conv2d(4, 32, kernel_size=8, stride=4)  # 64 -> 15
        # Same geometry: gate and shift per channel. As blocks: its weight gradient cost 3.3x its forward.
        self.mask_conv = SpaceToDepthConv2d(1, 64, kernel_size=8, stride=4)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=4, stride=2)  # 15 -> 6
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3, stride=1)  # 6 -> 4
        self.fc = nn.Linear(64 * 4 * 4, out_dim)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor, enemy: torch.Tensor) -> torch.Tensor:
        """rgb uint8 [N, 3, 64, 64], depth uint8 [N, 1, 64, 64], enemy uint8 [N, 1, 64, 64] (0/1) -> [N, out]."""
        dtype = compute_dtype(self.conv1.weight)
        if self.input_norm is None:
            pixels = _pixels(rgb, depth, dtype)
        else:  # the statistics' arithmetic stays in the weights' dtype (float32)
            pixels = self.input_norm(_pixels(rgb, depth, self.conv1.weight.dtype))
        gate, shift = self.mask_conv(enemy.to(dtype)).chunk(2, dim=1)
        # 2 * sigmoid: a neutral gate (0 logit) leaves features unchanged.
        h = F.relu(self.conv1(pixels) * (2.0 * torch.sigmoid(gate)) + shift)
        h = F.relu(self.conv2(h))
        h = F.relu(self.conv3(h))
        return F.relu(self.norm(self.fc(h.flatten(1))))

    def update_input_norm(
        self, rgb: torch.Tensor, depth: torch.Tensor, total: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> None:
        """Merge these frames (as `forward` takes them) into the input statistics; `total` as `InputNorm.update`."""
        if self.input_norm is None:
            raise RuntimeError("update_input_norm: this vision organ was built without normalize_input.")
        self.input_norm.update(_pixels(rgb, depth, torch.float32), total)


def compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype a layer with this weight computes in: autocast's where it is on (the learner's bf16), else the
    weight's. Raw inputs go straight into it and are scaled in place: on the CPU, making the learner's batch float32
    first, dividing it into a second copy and letting autocast cast a third cost a quarter of its step (the
    division alone 124 ms of ~490; docs/benchmarks.md, "The learner's input conversion, ...")."""
    device = weight.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype


def _pixels(rgb: torch.Tensor, depth: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 RGB [N, 3, 64, 64] and depth [N, 1, 64, 64] -> [N, 4, 64, 64] in [0, 1], in `dtype`."""
    return torch.cat([rgb, depth], dim=1).to(dtype).div_(255.0)


class AudioOrgan(nn.Module):
    """Strided 1-D convs over the stereo waveform int16 [N, 2, 1024]."""

    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv1d(2, 16, kernel_size=8, stride=4),  # 1024 -> 255
            nn.ReLU(),
            nn.Conv1d(16, 32, kernel_size=8, stride=4),  # 255 -> 62
            nn.ReLU(),
            nn.Conv1d(32, 32, kernel_size=4, stride=2),  # 62 -> 30
            nn.ReLU(),
        )
        self.fc = nn.Linear(32 * 30, out_dim)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio int16 [N, 2, 1024] -> [N, out_dim]."""
        wave = audio.to(compute_dtype(self.fc.weight)).div_(32768.0)  # int16 full scale -> [-1, 1)
        return F.relu(self.norm(self.fc(self.convs(wave).flatten(1))))


class ActionOrgan(nn.Module):
    """Embedding of the previous action, int64 [N] -> [N, embed_dim] (wider than a one-hot of A actions)."""

    def __init__(self, num_actions: int, embed_dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_actions, embed_dim)

    def forward(self, last_action: torch.Tensor) -> torch.Tensor:
        return self.embed(last_action)
