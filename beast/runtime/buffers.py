"""The rollout buffer pool: preallocated `[T+1, N, ...]` storage, a free queue and a full queue.

Every key of the learner's batch (docs/learner.md, "The batch") is one tensor `[T+1, N, ...]` for all N buffers,
slot-major, so that
  * the batcher writes a whole batch of envs, each at its own (slot, buffer), with one advanced-indexing
    assignment per key (through flat numpy views of the same memory, `rows`), and
  * the learner gathers B buffers with one `index_select` along dim 1 into a staging batch that is already the
    contiguous `[T+1, B, ...]` layout `learn_step` wants (pinned when the model is on a GPU, so the copy to the
    device is asynchronous and needs no second staging copy).
The recurrent state at each rollout's start lives beside it, `[N, ...]` per state tensor.

Ownership: a buffer id is in exactly one place — the free queue, an env of the batcher (filling), the full queue,
or the learner for the moment of its gather. Only the batcher takes free buffers, only the learner takes full ones,
and the learner frees a buffer as soon as it has copied it out, so the pool only runs dry when the learner is slower
than the actors for long enough to fill every spare buffer; then the batcher blocks (and says so).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Spec:
    """Shape of one slot's entry (without the T+1 and buffer dims) and its dtype."""

    shape: tuple[int, ...]
    dtype: torch.dtype


def rollout_specs(obs: Mapping[str, Mapping[str, object]], num_actions: int) -> dict[str, Spec]:
    """The learner's batch keys from the server's observation description (`EnvInfo.obs`)."""
    dtypes = {"uint8": torch.uint8, "int16": torch.int16, "float32": torch.float32}
    specs = {
        key: Spec(tuple(obs[key]["shape"]), dtypes[str(obs[key]["dtype"])])  # type: ignore[arg-type]
        for key in ("rgb", "depth", "enemy", "audio")
    }
    specs.update(
        reward=Spec((), torch.float32),
        done=Spec((), torch.bool),
        truncated=Spec((), torch.bool),
        last_action=Spec((), torch.int64),
        action=Spec((), torch.int64),
        policy_logits=Spec((num_actions,), torch.float32),
        policy_version=Spec((), torch.int64),
        task=Spec((), torch.int64),
    )
    return specs


class BufferPool:
    """N rollout buffers of T+1 slots, with the recurrent state at each one's start."""

    def __init__(
        self,
        num_buffers: int,
        unroll_length: int,
        specs: Mapping[str, Spec],
        state_template: Sequence[torch.Tensor],
        pin_memory: bool = False,
    ) -> None:
        self.num_buffers = num_buffers
        self.unroll_length = unroll_length
        self.pin_memory = pin_memory
        slots = unroll_length + 1
        self.specs = dict(specs)
        self.storage = {
            key: torch.zeros((slots, num_buffers, *spec.shape), dtype=spec.dtype, pin_memory=pin_memory)
            for key, spec in specs.items()
        }
        # state_template: one env's state tensors, batch dim 1 (e.g. model.initial_state(1)).
        self.initial_state = tuple(
            torch.zeros((num_buffers, *s.shape[1:]), dtype=s.dtype, pin_memory=pin_memory) for s in state_template
        )
        # Flat numpy views of the same (host, pinned or not) memory, row `slot * num_buffers + buffer`, for the
        # batcher's writes of a few rows: numpy's fancy assignment costs microseconds (a flat index a little less
        # than a (slot, buffer) pair), while torch's `index_put_` on these large tensors wakes the intra-op thread
        # pool and took ~2 ms per key on a 2-core machine busy with games (most of the batcher's time).
        self.rows = {
            key: tensor.numpy().reshape(slots * num_buffers, *tensor.shape[2:]) for key, tensor in self.storage.items()
        }
        # Who filled each buffer and which of its rollouts it holds: for statistics and tests, not the learner.
        self.owner = np.full(num_buffers, -1, dtype=np.int64)
        self.rollout_index = np.zeros(num_buffers, dtype=np.int64)
        self._free: queue.Queue[int] = queue.Queue()
        self._full: queue.Queue[int] = queue.Queue()
        for i in range(num_buffers):
            self._free.put(i)
        self._taken = 0  # full buffers the learner took and has not gathered yet (still "full" for the view)
        self._staging: dict[int, tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]] = {}

    # --- batcher side ----------------------------------------------------------------------------------------
    def acquire(self, timeout_s: float | None = None) -> int | None:
        """A free buffer id, waiting up to `timeout_s` (None: do not wait); None if there is none."""
        try:
            if timeout_s is None:
                return self._free.get_nowait()
            return self._free.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def submit(self, buffer_id: int) -> None:
        """A buffer whose T+1 slots are written: hand it to the learner."""
        self._full.put(buffer_id)

    def release(self, buffer_ids: Sequence[int] | np.ndarray) -> None:
        """Buffers back to the free queue (consumed by the learner, or a rollout dropped by the batcher)."""
        for i in buffer_ids:
            self._free.put(int(i))

    # --- learner side ----------------------------------------------------------------------------------------
    def take(self, count: int, stop: threading.Event, poll_s: float = 0.1) -> list[int] | None:
        """`count` full buffers, oldest first, waiting for them; None if `stop` is set meanwhile."""
        taken: list[int] = []
        while len(taken) < count:
            try:
                taken.append(self._full.get(timeout=poll_s))
                self._taken += 1
            except queue.Empty:
                if stop.is_set():
                    # Nobody will train on them: keep them in the full queue for a final count, in order.
                    for i in taken:
                        self._full.put(i)
                    self._taken = 0
                    return None
        return taken

    def gather(self, buffer_ids: Sequence[int]) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
        """Copy buffers into a staging batch `[T+1, B, ...]` and their initial states `[B, ...]`, then free them.

        The staging tensors are reused by the next gather of the same size: use (or copy to the device) the
        batch before gathering again, which a learner that finishes its step first does by construction.
        """
        ids = torch.as_tensor(list(buffer_ids), dtype=torch.int64)
        batch, state = self._staging_for(len(ids))
        for key, tensor in self.storage.items():
            torch.index_select(tensor, 1, ids, out=batch[key])
        for s, out in zip(self.initial_state, state, strict=True):
            torch.index_select(s, 0, ids, out=out)
        self._taken = 0
        self.release(buffer_ids)
        return batch, state

    def _staging_for(self, size: int) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
        if size not in self._staging:
            batch = {
                key: torch.empty((t.shape[0], size, *t.shape[2:]), dtype=t.dtype, pin_memory=self.pin_memory)
                for key, t in self.storage.items()
            }
            state = tuple(
                torch.empty((size, *s.shape[1:]), dtype=s.dtype, pin_memory=self.pin_memory) for s in self.initial_state
            )
            self._staging[size] = (batch, state)
        return self._staging[size]

    # --- occupancy -------------------------------------------------------------------------------------------
    def occupancy(self) -> dict[str, int]:
        """Buffers free, being filled by envs, and full (waiting for the learner); approximate while threads run."""
        free, full = self._free.qsize(), self._full.qsize() + self._taken
        return {"free": free, "full": full, "filling": max(0, self.num_buffers - free - full)}
