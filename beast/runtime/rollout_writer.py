"""Each env's steps into its rollout buffer; complete rollouts to the learner.

A batch of envs is written with one indexed assignment per key, each env at its own (slot, buffer). An env whose
buffer is complete (slot T written) submits it and continues in a fresh buffer whose slot 0 is a copy of slot T
and whose initial state is the state before that step. An env whose server went down has its unfinished rollout
dropped (`drop`): the buffer goes back to the pool unused, never half-used.

Taking a buffer blocks only when none is free, i.e. when the learner is behind; `waiting_for_buffer` says so, and
`keep_alive` is called every `keep_alive_s` meanwhile so that the env servers do not idle out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import torch

from beast.runtime.buffers import BufferPool


class StoppedError(Exception):
    """The stop event was set while waiting for a buffer."""


class RolloutWriter:
    """The buffer, slot and rollout count of every env; written from the batcher's thread only."""

    def __init__(
        self,
        pool: BufferPool,
        num_envs: int,
        stop: threading.Event,
        keep_alive: Callable[[], None],
        keep_alive_s: float,
    ) -> None:
        self.pool = pool
        self.T = pool.unroll_length
        self.stop = stop
        self._keep_alive = keep_alive
        self._keep_alive_s = keep_alive_s
        self.buffer = np.full(num_envs, -1, dtype=np.int64)  # the buffer each env fills, -1: none yet
        self.slot = np.zeros(num_envs, dtype=np.int64)  # the slot its next step goes to
        self.rollouts = np.zeros(num_envs, dtype=np.int64)  # rollouts started per env
        # Read by the trainer's thread (ints, floats and bools are atomic to read).
        self.waiting_for_buffer = False
        self.wait_buffer_s = 0.0
        self.dropped_rollouts = 0

    def record(self, g: np.ndarray, rows: dict[str, np.ndarray], pre_state: tuple[torch.Tensor, ...]) -> None:
        """Write slot `slot[g]` of envs `g`'s buffers (`rows` [n, ...] per key; `pre_state`: the state before)."""
        fresh = (self.buffer[g] < 0).nonzero()[0]
        if len(fresh):
            new = self._acquire(len(fresh))
            self._start_rollouts(g[fresh], new, pre_state, fresh)
            self.slot[g[fresh]] = 0
        at = self.slot[g] * self.pool.num_buffers + self.buffer[g]
        for key, value in rows.items():
            self.pool.rows[key][at] = value
        self.slot[g] += 1

        complete = (self.slot[g] > self.T).nonzero()[0]
        if len(complete):
            old = self.buffer[g[complete]]
            new = np.empty_like(old)
            for i, buffer_id in enumerate(old):
                # One at a time, submitting each full buffer as soon as its successor is in hand: with
                # num_buffers >= envs + B this can never deadlock (see BufferPool).
                new[i] = self._acquire(1)[0]
                self.pool.submit(int(buffer_id))
            last = self.T * self.pool.num_buffers + old
            for array in self.pool.rows.values():
                # Slot T of each old buffer to slot 0 of its new one. The source rows are read (fancy indexing
                # copies) before the destination is written, so this is right even when a buffer just submitted was
                # consumed and came back as some env's successor.
                array[new] = array[last]
            self._start_rollouts(g[complete], new, pre_state, complete)
            self.slot[g[complete]] = 1

    def drop(self, envs: np.ndarray) -> None:
        """Give the unfinished rollouts of `envs` back to the pool; they start afresh at their next step."""
        held = self.buffer[envs]
        self.pool.release(held[held >= 0])
        self.dropped_rollouts += int((held >= 0).sum())
        self.buffer[envs] = -1

    def _start_rollouts(
        self, envs: np.ndarray, buffers: np.ndarray, pre_state: tuple[torch.Tensor, ...], rows: np.ndarray
    ) -> None:
        """Envs `envs` begin buffers `buffers`; their initial state is the state before this step (batch `rows`)."""
        dst = torch.from_numpy(buffers)
        for store, s in zip(self.pool.initial_state, pre_state, strict=True):
            store.index_copy_(0, dst, s.index_select(0, torch.from_numpy(rows).to(s.device)).to(store.device))
        self.pool.owner[buffers] = envs
        self.pool.rollout_index[buffers] = self.rollouts[envs]
        self.rollouts[envs] += 1
        self.buffer[envs] = buffers

    def _acquire(self, count: int) -> np.ndarray:
        out = np.empty(count, dtype=np.int64)
        for i in range(count):
            buffer_id = self.pool.acquire()
            if buffer_id is None:
                self.waiting_for_buffer = True
                t0 = time.perf_counter()
                pinged = t0
                while buffer_id is None:
                    if self.stop.is_set():
                        raise StoppedError
                    buffer_id = self.pool.acquire(timeout_s=0.1)
                    if time.perf_counter() - pinged > self._keep_alive_s:
                        self._keep_alive()
                        pinged = time.perf_counter()
                self.wait_buffer_s += time.perf_counter() - t0
                self.waiting_for_buffer = False
            out[i] = buffer_id
        return out
