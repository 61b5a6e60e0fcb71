"""The dynamic batcher: the inference thread that plays every env of the run.

One loop, one thread, all servers:
  1. collect: poll every server's socket; take whichever envs are ready, until `max_inference_batch` envs or
     `max_inference_wait_ms` after the first arrival (a partial batch beats idling the model);
  2. act: shape rewards, run the policy on the batch (T=1, per-env recurrent state kept on the device, gathered
     and scattered by env index), sample actions, and send them back at once so the games step while we write;
  3. record: write the whole batch into the envs' rollout buffers with one indexed assignment per key; an env
     whose buffer is complete (slot T written) submits it to the learner and continues in a fresh buffer whose
     slot 0 is a copy of slot T and whose initial state is the state before that step.

A local server that dies (or any server that stops answering) has its envs' unfinished rollouts dropped: their
buffers go back to the pool unused, never half-used. The server is restarted in the background (`EnvSet`) and
its envs start over from RESET with `done` set. The batcher blocks only when no buffer is free, i.e. when the
learner is behind; `waiting_for_buffer` says so.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
import zmq

from beast.config import Config
from beast.envs.client import EnvServerError, EnvServerTimeoutError, Results
from beast.envs.shaping import RewardShaper
from beast.runtime.buffers import BufferPool
from beast.runtime.envs import EnvSet
from beast.runtime.weights import Policy

OBS_KEYS = ("rgb", "depth", "enemy", "audio")
EPISODE_KEYS = ("crashed", "episode_return", "episode_length")  # read only for steps that ended an episode
POLL_MS = 100  # idle poll: how quickly stop requests and dead servers are noticed
HANG_S = 60.0  # a server with steps in flight and no result for this long is treated as crashed
SUPERVISE_S = 0.05  # between looks for dead, hung and restarted servers (~30 us each): not once per batch
EPISODE_WINDOW = 100


class StoppedError(Exception):
    """The stop event was set while the batcher waited for a buffer."""


@dataclass
class Arrival:
    """Results from one server: `local_ids` [n] and arrays [n, ...]; `reset` marks first observations of RESET."""

    server: int
    local_ids: np.ndarray
    results: Results
    reset: bool = False

    def __len__(self) -> int:
        return len(self.local_ids)

    def split(self, n: int) -> tuple[Arrival, Arrival]:
        head = {k: v[:n] for k, v in self.results.items()}
        tail = {k: v[n:] for k, v in self.results.items()}
        return (
            Arrival(self.server, self.local_ids[:n], head, self.reset),
            Arrival(self.server, self.local_ids[n:], tail, self.reset),
        )


class Batcher:
    """Drives every env of `envs` with `policy`, filling rollouts of `pool`. Run `run()` in its own thread."""

    def __init__(
        self,
        cfg: Config,
        envs: EnvSet,
        pool: BufferPool,
        policy: Policy,
        device: torch.device,
        stop: threading.Event,
        first: list[tuple[int, Results]],
    ) -> None:
        self.cfg = cfg
        self.envs = envs
        self.pool = pool
        self.policy = policy
        self.device = device
        self.stop = stop
        self.T = pool.unroll_length
        n = envs.num_envs
        assert envs.info is not None
        self.state = policy.initial_state(n, device)
        self.buffer = np.full(n, -1, dtype=np.int64)  # the buffer each env fills, -1: none yet
        self.slot = np.zeros(n, dtype=np.int64)  # the slot its next step goes to
        self.rollouts = np.zeros(n, dtype=np.int64)  # rollouts started per env
        self.last_action = np.zeros(n, dtype=np.int64)
        self.shaper = RewardShaper(envs.info.var_names, cfg, n)
        names = envs.info.var_names
        self._kill_col = names.index("KILLCOUNT") if "KILLCOUNT" in names else None
        self._health_col = names.index("HEALTH") if "HEALTH" in names else None
        self.pending: collections.deque[Arrival] = collections.deque(
            Arrival(s, np.arange(len(r["done"]), dtype=np.int64), r, reset=True) for s, r in first
        )
        self.in_flight = np.zeros(len(envs.slots), dtype=np.int64)
        self.last_heard = np.full(len(envs.slots), time.monotonic())
        self._poller = zmq.Poller()
        self._sockets: dict[object, int] = {}
        self._rebuild_poller()
        self._next_supervise = 0.0
        self._looked = time.monotonic()  # when _collect last polled: what it finds next arrived after this
        # Statistics, read by the trainer's thread (ints and floats are atomic to read; the episode deque is not).
        self.steps = 0  # env steps acted on (resets excluded)
        self.batches = 0
        self.inference_s = 0.0  # time in policy.act: the model's share of the loop
        self.wait_buffer_s = 0.0
        self.waiting_for_buffer = False
        self.dropped_rollouts = 0
        self.episodes = 0
        # (return, length, kills, success): success as `beast.evaluate` defines it (ended on its own, alive).
        self.episode_log: collections.deque[tuple[float, int, float, float]] = collections.deque(maxlen=EPISODE_WINDOW)
        self._episode_lock = threading.Lock()
        self.error: BaseException | None = None
        self.server_errors: list[str] = []
        # Set from another thread (the curriculum) to have every local server restarted, with this reason.
        self.restart_local: str | None = None

    # --- the loop --------------------------------------------------------------------------------------------
    def run(self) -> None:
        """The thread's body: loop until `stop`; an error is kept in `self.error` and stops the run."""
        try:
            while not self.stop.is_set():
                if time.monotonic() >= self._next_supervise:
                    self._supervise()
                    self._next_supervise = time.monotonic() + SUPERVISE_S
                batch = self._collect()
                if batch:
                    self.step(batch)
        except StoppedError:
            pass
        except BaseException as err:
            self.error = err
            self.stop.set()

    def _rebuild_poller(self) -> None:
        self._poller = zmq.Poller()
        self._sockets = {}
        for slot in self.envs.slots:
            if slot.up and slot.client is not None:
                self._poller.register(slot.client.socket, zmq.POLLIN)
                self._sockets[slot.client.socket] = slot.index

    def _supervise(self) -> None:
        reason, self.restart_local = self.restart_local, None
        if reason is not None:
            for slot in self.envs.slots[: self.cfg.num_servers]:
                if slot.up:
                    self.server_down(slot.index, reason)
        now = time.monotonic()
        hung = [
            s.index
            for s in self.envs.slots
            if s.up and self.in_flight[s.index] > 0 and now - self.last_heard[s.index] > HANG_S
        ]
        for index in set(self.envs.dead_servers()) | set(hung):
            self.server_down(index, "exited" if index not in hung else f"silent for {HANG_S:.0f} s")
        back = self.envs.take_restarted()
        for index, results in back:
            slot = self.envs.slots[index]
            g = slice(slot.offset, slot.offset + slot.num_envs)
            for s in self.state:
                s[g] = 0
            self.pending.append(Arrival(index, np.arange(slot.num_envs, dtype=np.int64), results, reset=True))
        if back:
            self._rebuild_poller()

    def server_down(self, index: int, why: str) -> None:
        """Drop the unfinished rollouts of server `index`'s envs and restart it in the background."""
        slot = self.envs.slots[index]
        g = np.arange(slot.offset, slot.offset + slot.num_envs)
        held = self.buffer[g]
        self.pool.release(held[held >= 0])
        self.dropped_rollouts += int((held >= 0).sum())
        self.buffer[g] = -1
        self.in_flight[index] = 0
        self.pending = collections.deque(a for a in self.pending if a.server != index)
        self.server_errors.append(f"env server {slot.address}: {why}; restarting it")
        self.envs.begin_restart(index, on_error=lambda err: self.server_errors.append(f"restart failed: {err}"))
        self._rebuild_poller()

    def _collect(self) -> list[Arrival]:
        """Ready envs, up to max_inference_batch, waiting at most max_inference_wait_ms after the first one."""
        limit = self.cfg.max_inference_batch
        batch: list[Arrival] = []
        count = 0
        deadline: float | None = None
        first_look = True  # a look without waiting at what arrived while the last batch ran...
        since: float | None = self._looked  # ...which arrived after our last look
        while count < limit:
            while self.pending and count < limit:
                arrival = self.pending.popleft()
                if count + len(arrival) > limit:
                    arrival, rest = arrival.split(limit - count)
                    self.pending.appendleft(rest)
                batch.append(arrival)
                count += len(arrival)
            if count >= limit or self.stop.is_set():
                break
            if deadline is None and count > 0:
                # The wait runs from the first arrival. What the first look finds arrived while the last batch ran,
                # no earlier than our last look: counting from then, no env waits longer than asked because the
                # batcher was busy (and what piled up during a long batch runs at once).
                deadline = (time.monotonic() if since is None else since) + self.cfg.max_inference_wait_ms / 1000
            if deadline is not None and not self.in_flight.any():
                break  # every env is in: nothing more can arrive
            now = time.monotonic()
            timeout_ms = 0.0 if first_look else POLL_MS if deadline is None else max(0.0, (deadline - now) * 1000.0)
            self._looked = now
            events = self._poller.poll(int(timeout_ms))  # whole ms, rounded down: never longer than asked
            for socket, _ in events:
                self._receive(self._sockets[socket])
            if not events and not first_look and (deadline is not None or count == 0):
                break  # waited long enough: run what we have (or go back to supervise when idle)
            first_look, since = False, None
        return batch

    def _receive(self, index: int) -> None:
        client = self.envs.slots[index].client
        if client is None:
            return
        try:
            local_ids, results = client.recv(timeout_ms=0)
        except EnvServerTimeoutError:
            return  # a stale sync reply was dropped; nothing to act on
        except EnvServerError as err:
            self.server_down(index, str(err))
            return
        self.in_flight[index] -= len(local_ids)
        self.last_heard[index] = time.monotonic()
        self.pending.append(Arrival(index, np.asarray(local_ids, dtype=np.int64), results))

    # --- one batch -------------------------------------------------------------------------------------------
    def step(self, batch: list[Arrival]) -> None:
        """Act on a batch of arrivals and record it (public for tests that drive the batcher by hand)."""
        offsets = self.envs.offsets
        g = _join([offsets[a.server] + a.local_ids for a in batch])
        rows = {key: _cat([a.results[key] for a in batch]) for key in OBS_KEYS}
        rows["done"], rows["truncated"], rows["reward"] = self._arrive(batch, g)
        rows["last_action"] = self.last_action[g]  # the model reads its start token where `done`

        # [None] adds T=1 as a numpy view, cheaper than torch's unsqueeze; on the CPU `.to` would be a no-op call.
        inputs = {key: torch.from_numpy(value[None]) for key, value in rows.items()}
        if self.device.type != "cpu":
            inputs = {key: value.to(self.device, non_blocking=True) for key, value in inputs.items()}
        # A stateless policy (the benchmark's random one) needs no gather or scatter: skip the index tensor too.
        index = torch.from_numpy(g).to(self.device) if self.state else None
        pre_state = tuple(s.index_select(0, index) for s in self.state) if index is not None else ()

        t0 = time.perf_counter()
        logits, actions, new_state, version = self.policy.act(inputs, pre_state)
        actions_np = actions.cpu().numpy()
        self.inference_s += time.perf_counter() - t0
        self._send(batch, actions_np)

        if index is not None:
            for s, new in zip(self.state, new_state, strict=True):
                s.index_copy_(0, index, new)
        self.last_action[g] = actions_np
        rows["action"] = actions_np
        rows["policy_logits"] = logits.cpu().numpy()
        rows["policy_version"] = np.full(len(g), version, dtype=np.int64)
        self._record(g, rows, pre_state)
        self.steps += int(sum(len(a) for a in batch if not a.reset))
        self.batches += 1

    def _arrive(self, batch: list[Arrival], g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`done`, `truncated` and the training reward [n] for the steps that led to the batch's observations (envs
        `g`); a RESET's first observation counts as done, with reward 0. Finished episodes go to the episode log."""
        if len(batch) > 1 and any(a.reset for a in batch):
            # First observations (the run's start, a restarted server) among steps: rare, one arrival at a time.
            offsets = self.envs.offsets
            parts = [self._arrive([a], offsets[a.server] + a.local_ids) for a in batch]
            return tuple(_join([part[i] for part in parts]) for i in range(3))  # type: ignore[return-value]
        if batch[0].reset:
            self.shaper.reset(g, batch[0].results["vars"])
            return np.ones(len(g), dtype=bool), np.zeros(len(g), dtype=bool), np.zeros(len(g), dtype=np.float32)
        # One shaper call for the whole batch, not one per arrival: its cost is per call, and an env is in a batch
        # at most once (it has one step in flight), so joining arrivals changes nothing.
        r = {
            key: _join([a.results[key] for a in batch]) for key in ("done", "truncated", "vars", "reward", "final_vars")
        }
        ended, truncated = r["done"].astype(bool), r["truncated"].astype(bool)
        if ended.any():
            r.update({key: _join([a.results[key] for a in batch]) for key in EPISODE_KEYS})
            kills = (
                r["final_vars"][ended, self._kill_col] if self._kill_col is not None else np.full(ended.sum(), np.nan)
            )
            finished = ended & ~r["crashed"].astype(bool)  # a crash cut the episode short: not a real result
            success = (
                np.full(ended.sum(), np.nan)
                if self._health_col is None
                else (~truncated[ended] & (r["final_vars"][ended, self._health_col] > 0)).astype(np.float64)
            )
            with self._episode_lock:
                for ret, length, k, won in zip(
                    r["episode_return"][finished],
                    r["episode_length"][finished],
                    kills[finished[ended]],
                    success[finished[ended]],
                    strict=True,
                ):
                    self.episode_log.append((float(ret), int(length), float(k), float(won)))
                self.episodes += int(finished.sum())
        return ended, truncated, self.shaper.step(g, r["vars"], r["reward"], ended, truncated, r["final_vars"])

    def _send(self, batch: list[Arrival], actions: np.ndarray) -> None:
        start = 0
        by_server: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        for a in batch:
            ids, acts = by_server.setdefault(a.server, ([], []))
            ids.append(a.local_ids)
            acts.append(actions[start : start + len(a)])
            start += len(a)
        for index, (ids, acts) in by_server.items():
            client = self.envs.slots[index].client
            if client is None or not self.envs.slots[index].up:
                continue
            local_ids = _join(ids)
            try:
                client.send(local_ids, _join(acts))  # the client converts both to the wire's int32
            except (EnvServerError, EnvServerTimeoutError) as err:
                self.server_down(index, str(err))
                continue
            if self.in_flight[index] == 0:
                self.last_heard[index] = time.monotonic()
            self.in_flight[index] += len(local_ids)

    def _record(self, g: np.ndarray, rows: dict[str, np.ndarray], pre_state: tuple[torch.Tensor, ...]) -> None:
        """Write slot `slot[g]` of each env's buffer; complete rollouts go to the learner (see module docstring)."""
        if not all(slot.up for slot in self.envs.slots):
            # An env whose server went down during this batch has no buffer to write into: its step is dropped.
            up = np.array([slot.up for slot in self.envs.slots])
            keep = np.flatnonzero(up[np.searchsorted(self.envs.offsets, g, side="right") - 1])
            g = g[keep]
            rows = {key: value[keep] for key, value in rows.items()}
            pre_state = tuple(s.index_select(0, torch.from_numpy(keep).to(s.device)) for s in pre_state)
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
                    if time.perf_counter() - pinged > self.cfg.envserver_idle_timeout_s / 3:
                        self._keep_alive()
                        pinged = time.perf_counter()
                self.wait_buffer_s += time.perf_counter() - t0
                self.waiting_for_buffer = False
            out[i] = buffer_id
        return out

    def _keep_alive(self) -> None:
        """Ping every server while no actions go out: a learner step longer than the servers' idle timeout must
        not make them exit. A failed ping is left to `_supervise`, which runs once a buffer is free again: taking a
        server down here, in the middle of recording a batch, would pull buffers from under the write."""
        for slot in self.envs.slots:
            if slot.up and slot.client is not None:
                with contextlib.suppress(EnvServerError, EnvServerTimeoutError):
                    slot.client.ping(timeout_ms=int(self.cfg.envserver_idle_timeout_s * 1000 / 3))

    # --- statistics ------------------------------------------------------------------------------------------
    def episode_stats(self) -> dict[str, float | None]:
        """Mean return, length, kills and success rate over the last 100 finished episodes (None before the first),
        and the mean per-episode sum of each reward term."""
        with self._episode_lock:
            log = list(self.episode_log)
        stats: dict[str, float | None] = dict(self.shaper.term_stats())
        if not log:
            return {"mean_return": None, "mean_length": None, "mean_kills": None, "success_rate": None, **stats}
        returns, lengths, kills, success = (np.array(column, dtype=np.float64) for column in zip(*log, strict=True))
        return {
            "mean_return": float(returns.mean()),
            "mean_length": float(lengths.mean()),
            "mean_kills": None if np.isnan(kills).all() else float(np.nanmean(kills)),
            "success_rate": None if np.isnan(success).all() else float(np.nanmean(success)),
            **stats,
        }


def _join(arrays: list[np.ndarray]) -> np.ndarray:
    """One array of a batch's rows; a single part as it is (read-only views stay read-only)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _cat(arrays: list[np.ndarray]) -> np.ndarray:
    """One array of a batch's rows. The client's arrays are read-only views of ZeroMQ frames, which torch refuses
    to wrap without a warning; one memcpy of a batch (~25 KB per env) is cheap next to a step."""
    return arrays[0].copy() if len(arrays) == 1 else np.concatenate(arrays)
