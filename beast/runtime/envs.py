"""The run's env servers as one set of envs: local ones started and restarted here, remote ones connected.

Envs get global indices 0..N-1, server by server (`offsets[s] + local id`), so the batcher, the buffer pool and the
reward shaper index flat arrays. Local and remote servers are alike to the batcher; only a restart differs (a local
server is stopped and started again, a remote one is reconnected).

Tasks (`beast.envs.tasks`): in a multi-task run every task has `--num-servers` local servers of its own, each
playing that task's scenario with its settings, and a remote server plays the task whose scenario its INFO names.
So a server's task, and with it every one of its envs' (`env_task`), is fixed for the whole run: a restarted
server plays the same task again.

Threads: the batcher owns every `AsyncEnvClient` (ZeroMQ sockets are single-threaded). A restart runs in a background
thread that builds a *new* client, resets it and hands it over through a queue, so the batcher never waits for the
seconds a server needs to start its games; the batcher closes the dead client itself before asking for a restart.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from beast.config import Config
from beast.envs.client import (
    AsyncEnvClient,
    EnvInfo,
    EnvServerError,
    EnvServerTimeoutError,
    Results,
)
from beast.envs.curve import ensure_curve_keypair, read_curve_public_key
from beast.envs.scenarios import ScenarioError
from beast.envs.server import EnvServer
from beast.envs.tasks import ActionSpace, task_config, task_names, task_of_scenario

RESTART_RETRY_S = 2.0  # pause between failed restart attempts, so a broken setup does not spin


@dataclass
class ServerSlot:
    """One server of the set: where it is, its envs' global range, and whether it is serving."""

    index: int
    address: str
    offset: int = 0
    num_envs: int = 0
    local: EnvServer | None = None
    client: AsyncEnvClient | None = None
    up: bool = False
    generation: int = 0  # restarts so far; local restarts get fresh seeds from it
    task: int = 0  # the task its games play (a remote server's is known once it has said hello)
    buttons: tuple[str, ...] = ()  # its games' buttons, from its INFO: a restart must bring back the same


class EnvSet:
    """Local servers (`--num-servers` x `--envs-per-server`) plus remote ones (`--env-servers`), as one env index."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.task_names = task_names(cfg.scenario)
        remote = cfg.remote_server_list()
        self.num_local = len(self.task_names) * cfg.num_servers  # local servers, task by task
        self.slots = [ServerSlot(i, "", task=i // cfg.num_servers) for i in range(self.num_local)]
        self.slots += [ServerSlot(self.num_local + i, addr) for i, addr in enumerate(remote)]
        self._curve_key = read_curve_public_key(cfg.curve_server_key) if cfg.curve_server_key else None
        self._client_keys = ensure_curve_keypair(cfg.curve_client_key)[:2] if cfg.curve_client_key else None
        self._restarted: queue.Queue[tuple[int, EnvServer | None, AsyncEnvClient, Results]] = queue.Queue()
        self._stopping = threading.Event()
        self._restart_threads: list[threading.Thread] = []
        self.info: EnvInfo | None = None
        self.actions: ActionSpace | None = None
        self.offsets = np.zeros(0, dtype=np.int64)
        self.env_task = np.zeros(0, dtype=np.int64)  # the task of each env, by global id
        self.restarts = 0

    # --- lifetime --------------------------------------------------------------------------------------------
    def start(self) -> list[tuple[int, Results]]:
        """Start local servers (in parallel: each takes seconds to start its games), connect all, reset all.
        Returns each server's first observations, `(server index, results [K, ...])`."""
        errors: list[BaseException] = []

        def bring_up(slot: ServerSlot) -> None:
            try:
                slot.local, slot.client = self._connect(slot)
            except BaseException as err:  # reported below, after every thread is done
                errors.append(err)

        threads = [threading.Thread(target=bring_up, args=(slot,), daemon=True) for slot in self.slots]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.close()
            raise errors[0]
        infos = [slot.client.info for slot in self.slots if slot.client is not None]
        try:
            self._assign_tasks(infos)
        except (EnvServerError, ScenarioError):
            self.close()
            raise
        self.info = infos[0]
        offset = 0
        for slot, info in zip(self.slots, infos, strict=True):
            slot.offset, slot.num_envs, slot.up = offset, info.num_envs, True
            slot.buttons = tuple(info.action_names)
            offset += info.num_envs
        self.offsets = np.array([slot.offset for slot in self.slots], dtype=np.int64)
        self.env_task = np.concatenate([np.full(slot.num_envs, slot.task, dtype=np.int64) for slot in self.slots])
        return [(slot.index, slot.client.reset()) for slot in self.slots if slot.client is not None]

    def _assign_tasks(self, infos: list[EnvInfo]) -> None:
        """Each remote server's task from its scenario, every server checked against its task's first one, and the
        run's action space from the tasks' buttons."""
        multitask = len(self.task_names) > 1
        for slot, info in zip(self.slots[self.num_local :], infos[self.num_local :], strict=True):
            task = task_of_scenario(self.task_names, info.scenario) if multitask else 0
            if task is None:
                raise EnvServerError(
                    f"env server {slot.address} plays {info.scenario}, which is none of this run's tasks "
                    f"({', '.join(self.task_names)}); serve one of them there."
                )
            slot.task = task
        first_of: dict[int, tuple[ServerSlot, EnvInfo]] = {}
        for slot, info in zip(self.slots, infos, strict=True):
            reference, ref_info = first_of.setdefault(slot.task, (slot, info))
            if info.action_names != ref_info.action_names or info.var_names != infos[0].var_names:
                raise EnvServerError(
                    f"env server {slot.address} plays a different game ({info.num_actions} actions, vars "
                    f"{info.var_names}) from {reference.address}; every server of a task must use one scenario."
                )
        self.actions = ActionSpace.for_tasks(
            [first_of[t][1].action_names for t in range(len(self.task_names))], self.task_names
        )

    def _connect(self, slot: ServerSlot) -> tuple[EnvServer | None, AsyncEnvClient]:
        """Start (local) or reach (remote) the server of `slot`; raises if it cannot."""
        local = None
        address = slot.address
        if slot.index < self.num_local:
            local = EnvServer.from_config(task_config(self.cfg, slot.task), slot.index)
            # A restarted server gets seeds no other server of the run has used (docs/protocol.md, "Seeds").
            local.seed += slot.generation * self.num_local * self.cfg.envs_per_server
            local.start()
            address = local.address
        try:
            remote = local is None
            client = AsyncEnvClient(
                address,
                curve_server_key=self._curve_key if remote else None,
                curve_client_keys=self._client_keys if remote else None,
            )
        except BaseException:
            if local is not None:
                local.stop(timeout_s=1.0)
            raise
        slot.address = address
        return local, client

    def close(self) -> None:
        """Close every client and stop every local server, in parallel (each may take a second to close games)."""
        self._stopping.set()
        for slot in self.slots:
            if slot.client is not None:
                slot.client.close()
                slot.client = None
            slot.up = False
        for t in self._restart_threads:
            t.join(timeout=10.0)
        while not self._restarted.empty():  # restarts that finished after we stopped caring
            _, local, client, _ = self._restarted.get_nowait()
            client.close()
            if local is not None:
                local.stop(timeout_s=1.0)
        stoppers = [
            threading.Thread(target=slot.local.stop, kwargs={"timeout_s": 2.0}, daemon=True)
            for slot in self.slots
            if slot.local is not None
        ]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        for slot in self.slots:
            slot.local = None

    def __enter__(self) -> EnvSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- layout ----------------------------------------------------------------------------------------------
    @property
    def num_envs(self) -> int:
        return int(sum(slot.num_envs for slot in self.slots))

    @property
    def num_actions(self) -> int:
        """The policy's actions: the scenario's buttons, or the communal ones in a multi-task run."""
        assert self.actions is not None, "start() first"
        return self.actions.num_actions

    @property
    def server_count(self) -> int:
        """Servers of the set, local and remote; indices 0..server_count-1, the local ones first."""
        return len(self.slots)

    def serving(self, index: int) -> AsyncEnvClient | None:
        """The client of server `index` while it is in service; None while it is down or restarting."""
        slot = self.slots[index]
        return slot.client if slot.up else None

    def env_ids(self, index: int) -> np.ndarray:
        """The global ids of server `index`'s envs."""
        slot = self.slots[index]
        return np.arange(slot.offset, slot.offset + slot.num_envs, dtype=np.int64)

    def address(self, index: int) -> str:
        return self.slots[index].address

    def envs_up(self, env_ids: np.ndarray) -> np.ndarray:
        """Per global env id: whether its server is in service."""
        up = np.array([slot.up for slot in self.slots])
        return up[np.searchsorted(self.offsets, env_ids, side="right") - 1]

    # --- supervision (called from the batcher thread) --------------------------------------------------------
    def dead_servers(self) -> list[int]:
        """Serving local servers whose process has exited (the EnvServer reaper has already killed its group)."""
        return [s.index for s in self.slots if s.up and s.local is not None and not s.local.alive()]

    def begin_restart(self, index: int, on_error: Callable[[BaseException], None] | None = None) -> None:
        """Take server `index` out of service and bring it back in the background (new client, RESET)."""
        slot = self.slots[index]
        slot.up = False
        if slot.client is not None:
            slot.client.close()
            slot.client = None
        old, slot.local = slot.local, None
        slot.generation += 1
        self.restarts += 1
        if index >= self.num_local:
            slot.address = self.cfg.remote_server_list()[index - self.num_local]

        def restart() -> None:
            if old is not None:
                old.stop(timeout_s=2.0)
            while not self._stopping.is_set():
                try:
                    local, client = self._connect(slot)
                except Exception as err:
                    if on_error is not None:
                        on_error(err)
                    time.sleep(RESTART_RETRY_S)
                    continue
                try:
                    results = client.reset()
                except (EnvServerError, EnvServerTimeoutError) as err:
                    client.close()
                    if local is not None:
                        local.stop(timeout_s=1.0)
                    if on_error is not None:
                        on_error(err)
                    time.sleep(RESTART_RETRY_S)
                    continue
                self._restarted.put((index, local, client, results))
                return

        thread = threading.Thread(target=restart, name=f"envserver-restart-{index}", daemon=True)
        self._restart_threads.append(thread)
        thread.start()

    def take_restarted(self) -> list[tuple[int, Results]]:
        """Servers whose restart finished: put them back in service; their first observations, as `start()`."""
        back: list[tuple[int, Results]] = []
        while True:
            try:
                index, local, client, results = self._restarted.get_nowait()
            except queue.Empty:
                return back
            slot = self.slots[index]
            if client.info.num_envs != slot.num_envs or tuple(client.info.action_names) != slot.buttons:
                client.close()
                with contextlib.suppress(Exception):
                    if local is not None:
                        local.stop(timeout_s=1.0)
                raise EnvServerError(f"env server {slot.address} came back with a different game; cannot continue.")
            slot.local, slot.client, slot.up = local, client, True
            back.append((index, results))
