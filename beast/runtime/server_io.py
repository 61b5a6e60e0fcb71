"""The batcher's side of the env servers: which envs have results, sending their actions, keeping servers in service.

`collect` polls every serving server's socket and returns the envs that are ready, as arrivals, up to a batch cap
and at most `max_inference_wait_ms` after the first one (a partial batch beats idling the model). `send` starts the
next step of a batch's envs. `supervise` finds servers that died or went silent with steps out, takes them out of
service and has `EnvSet` restart them in the background; `keep_alive` heartbeats every server while no actions go
out (a learner slower than the idle timeout must not make them exit).

What the rest of the batcher must do when a server goes or comes back is told through two callbacks with the
global ids of its envs: `on_down` (drop their unfinished rollouts) and `on_back` (zero their recurrent state; their
first observations arrive as a RESET arrival).
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import zmq

from beast.envs.client import EnvServerError, EnvServerTimeoutError, Results
from beast.runtime.envs import EnvSet

POLL_MS = 100  # idle poll: how quickly stop requests and dead servers are noticed


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


class ServerIO:
    """Results in, actions out, servers supervised; owned by the batcher's thread (sockets are single-threaded)."""

    def __init__(
        self,
        envs: EnvSet,
        first: list[tuple[int, Results]],
        on_down: Callable[[np.ndarray], None],
        on_back: Callable[[np.ndarray], None],
        hang_s: float,
    ) -> None:
        self.envs = envs
        self.hang_s = hang_s  # steps out and no result for this long: the server is taken as dead
        self._on_down = on_down
        self._on_back = on_back
        self.pending: collections.deque[Arrival] = collections.deque(
            Arrival(s, np.arange(len(r["done"]), dtype=np.int64), r, reset=True) for s, r in first
        )
        self.last_heard = np.full(envs.server_count, time.monotonic())
        self._poller = zmq.Poller()
        self._sockets: dict[object, int] = {}
        self._rebuild_poller()
        self._looked = time.monotonic()  # when `collect` last polled: what it finds next arrived after this
        self.server_errors: list[str] = []
        # Set from another thread (the curriculum) to have every local server restarted, with this reason.
        self.restart_local: str | None = None

    # --- results in ------------------------------------------------------------------------------------------
    def collect(self, limit: int, wait_ms: float, stop: threading.Event) -> list[Arrival]:
        """Ready envs, up to `limit`, waiting at most `wait_ms` after the first one."""
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
            if count >= limit or stop.is_set():
                break
            if deadline is None and count > 0:
                # The wait runs from the first arrival. What the first look finds arrived while the last batch ran,
                # no earlier than our last look: counting from then, no env waits longer than asked because the
                # batcher was busy (and what piled up during a long batch runs at once).
                deadline = (time.monotonic() if since is None else since) + wait_ms / 1000
            if deadline is not None and not any(self.in_flight(i) for i in range(self.envs.server_count)):
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
        client = self.envs.serving(index)
        if client is None:
            return
        try:
            local_ids, results = client.recv(timeout_ms=0)
        except EnvServerTimeoutError:
            return  # only a PONG was there; nothing to act on
        except EnvServerError as err:
            self.server_down(index, str(err))
            return
        self.last_heard[index] = time.monotonic()
        self.pending.append(Arrival(index, np.asarray(local_ids, dtype=np.int64), results))

    # --- actions out -----------------------------------------------------------------------------------------
    def send(self, batch: list[Arrival], actions: np.ndarray) -> None:
        """Start the next step of the batch's envs (`actions` in batch order)."""
        start = 0
        by_server: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        for a in batch:
            ids, acts = by_server.setdefault(a.server, ([], []))
            ids.append(a.local_ids)
            acts.append(actions[start : start + len(a)])
            start += len(a)
        for index, (ids, acts) in by_server.items():
            client = self.envs.serving(index)
            if client is None:
                continue
            local_ids = ids[0] if len(ids) == 1 else np.concatenate(ids)
            try:
                client.send(local_ids, acts[0] if len(acts) == 1 else np.concatenate(acts))  # the wire's int32
            except (EnvServerError, EnvServerTimeoutError) as err:
                self.server_down(index, str(err))
                continue
            if client.in_flight == len(local_ids):  # the first out: the hang clock starts now
                self.last_heard[index] = time.monotonic()

    def keep_alive(self) -> None:
        """Heartbeat every server. One way, so the results of the steps already sent stay on the sockets for
        `collect`. A server that cannot take it is left to `supervise`: taking a server down here, in the middle
        of recording a batch, would pull buffers from under the write."""
        for index in range(self.envs.server_count):
            client = self.envs.serving(index)
            if client is not None:
                with contextlib.suppress(EnvServerTimeoutError):
                    client.heartbeat()

    def in_flight(self, index: int) -> int:
        """Envs of server `index` with a step out (0 for a server out of service)."""
        client = self.envs.serving(index)
        return client.in_flight if client is not None else 0

    # --- supervision -----------------------------------------------------------------------------------------
    def supervise(self) -> None:
        """Restart what the curriculum asked for, what died and what went silent; bring back what restarted."""
        reason, self.restart_local = self.restart_local, None
        if reason is not None:
            for index in range(self.envs.num_local):
                if self.envs.serving(index) is not None:
                    self.server_down(index, reason)
        now = time.monotonic()
        hung = [
            i for i in range(self.envs.server_count) if self.in_flight(i) and now - self.last_heard[i] > self.hang_s
        ]
        lost = [i for i in range(self.envs.server_count) if (c := self.envs.serving(i)) and c.lost_connection()]
        down = {i: "lost the connection" for i in lost}
        down.update({i: f"silent for {self.hang_s:g} s" for i in hung})
        down.update({i: "exited" for i in self.envs.dead_servers()})
        for index, why in down.items():
            self.server_down(index, why)
        back = self.envs.take_restarted()
        for index, results in back:
            self._on_back(self.envs.env_ids(index))
            self.pending.append(Arrival(index, np.arange(len(results["done"]), dtype=np.int64), results, reset=True))
        if back:
            self._rebuild_poller()

    def server_down(self, index: int, why: str) -> None:
        """Take server `index` out of service (its envs' unfinished rollouts go) and restart it in the background."""
        self._on_down(self.envs.env_ids(index))
        self.pending = collections.deque(a for a in self.pending if a.server != index)
        self.server_errors.append(f"env server {self.envs.address(index)}: {why}; restarting it")
        self.envs.begin_restart(index, on_error=lambda err: self.server_errors.append(f"restart failed: {err}"))
        self._rebuild_poller()

    def _rebuild_poller(self) -> None:
        self._poller = zmq.Poller()
        self._sockets = {}
        for index in range(self.envs.server_count):
            client = self.envs.serving(index)
            if client is not None:
                self._poller.register(client.socket, zmq.POLLIN)
                self._sockets[client.socket] = index
