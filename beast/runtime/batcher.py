"""The dynamic batcher: the inference thread that plays every env of the run.

One loop, one thread, all servers, in three parts with one job each:
  1. `ServerIO` collects whichever envs are ready (up to `max_inference_batch`, at most `max_inference_wait_ms`
     after the first arrival), sends actions, and keeps the servers in service;
  2. the acting step here: the shared `acting.transition` and `acting.model_inputs`, the policy on the batch (T=1,
     per-env recurrent state kept on the device, gathered and scattered by env index), and the actions sent back
     at once so the games step while we write;
  3. `RolloutWriter` writes the batch into the envs' rollout buffers and submits the complete ones to the learner.

In a multi-task run each env's task (`EnvSet.env_task`) goes with every step it writes (the rollout's `task`) and
into the model's inputs; its reward is its task's (`TaskRewards`), and the policy's action, one of the communal
buttons, is sent to the server as that scenario's own button index (`ActionSpace.to_native`).

A server that dies (or stops answering) has its envs' unfinished rollouts dropped; it is restarted in the
background (`EnvSet`) and its envs start over from RESET with `done` set and a zero state. The batcher blocks only
when no buffer is free, i.e. when the learner is behind; `writer.waiting_for_buffer` says so.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import torch

from beast.config import Config
from beast.envs.client import Results
from beast.envs.shaping import TaskRewards
from beast.envs.tasks import task_configs, task_label
from beast.runtime.acting import OBS_KEYS, model_inputs, transition
from beast.runtime.buffers import BufferPool
from beast.runtime.envs import EnvSet
from beast.runtime.episode_log import TaskEpisodeLogs
from beast.runtime.rollout_writer import RolloutWriter, StoppedError
from beast.runtime.server_io import Arrival, ServerIO
from beast.runtime.weights import Policy

EPISODE_KEYS = ("crashed", "episode_return", "episode_length")  # read only for steps that ended an episode
SUPERVISE_S = 0.05  # between looks for dead, hung and restarted servers (~30 us each): not once per batch


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
        assert envs.info is not None and envs.actions is not None
        self.cfg = cfg
        self.envs = envs
        self.policy = policy
        self.device = device
        self.stop = stop
        n = envs.num_envs
        self.state = policy.initial_state(n, device)
        # On the CPU each batch's state rows are gathered and scattered through numpy views of the same memory:
        # numpy copies whole rows, where torch's index_select and index_copy_ go element by element (a Mamba2
        # state is 128 KiB an env: 45 us against 65 and 126-142 us for 13 envs, measured).
        self._state_rows = [s.numpy() for s in self.state] if device.type == "cpu" else None
        self.last_action = np.zeros(n, dtype=np.int64)
        self.actions = envs.actions
        self.env_task = envs.env_task
        self.multitask = len(envs.task_names) > 1
        tasks = task_configs(cfg)
        self.env_skip = np.array([task.frame_skip for task in tasks], dtype=np.int64)[self.env_task]
        self.shaper = TaskRewards(envs.info.var_names, tasks, self.env_task)
        self.episode_log = TaskEpisodeLogs(envs.info.var_names, envs.task_names, self.env_task)
        self.io = ServerIO(
            envs, first, on_down=self._envs_down, on_back=self._envs_back, hang_s=cfg.envserver_hang_timeout_s
        )
        self.writer = RolloutWriter(
            pool, n, stop, keep_alive=self.io.keep_alive, keep_alive_s=cfg.envserver_idle_timeout_s / 3
        )
        self._next_supervise = 0.0
        # Statistics, read by the trainer's thread (ints and floats are atomic to read).
        self.steps = 0  # env steps acted on (resets excluded)
        self.frames = 0  # their engine tics: steps x each env's frame skip
        self.task_frames = np.zeros(len(envs.task_names), dtype=np.int64)  # the same, task by task
        self.batches = 0
        self.inference_s = 0.0  # time in policy.act: the model's share of the loop
        self.warming_up = False  # the policy is preparing (`_warm_up`): no env steps yet
        self.error: BaseException | None = None

    # --- the loop --------------------------------------------------------------------------------------------
    def run(self) -> None:
        """The thread's body: loop until `stop`; an error is kept in `self.error` and stops the run."""
        try:
            self._warm_up()
            while not self.stop.is_set():
                if time.monotonic() >= self._next_supervise:
                    self.io.supervise()
                    self._next_supervise = time.monotonic() + SUPERVISE_S
                batch = self.io.collect(self.cfg.max_inference_batch, self.cfg.max_inference_wait_ms, self.stop)
                if batch:
                    self.step(batch)
        except StoppedError:
            pass
        except BaseException as err:
            self.error = err
            self.stop.set()

    def _warm_up(self) -> None:
        """Let the policy prepare (compile) on stand-in batches of the smallest and the largest size this run can
        give it, before the first real one: the largest too, because a compiled forward needs a second graph from 16
        envs on (`CompiledActing`). A compile takes 20-60 s, longer than the servers' idle timeout, so it runs in a
        helper thread while this one keeps them alive; a stop ends the wait."""
        largest = min(self.cfg.max_inference_batch, self.envs.num_envs)
        batches = [self._stand_in_batch(n) for n in sorted({1, largest})]
        errors: list[BaseException] = []

        def prepare() -> None:
            try:
                for inputs, state in batches:
                    self.policy.warm_up(inputs, state)
            except BaseException as err:
                errors.append(err)

        helper = threading.Thread(target=prepare, name="acting-warm-up", daemon=True)
        self.warming_up = True
        helper.start()
        while helper.is_alive() and not self.stop.is_set():
            helper.join(self.cfg.envserver_idle_timeout_s / 3)
            self.io.keep_alive()
        self.warming_up = False
        if errors:
            raise errors[0]

    def _stand_in_batch(self, n: int) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
        """Model inputs and state for `n` envs at an episode start, shaped and typed as the servers' are."""
        assert self.envs.info is not None
        obs = self.envs.info.obs
        rows = {key: np.zeros((n, *obs[key]["shape"]), dtype=str(obs[key]["dtype"])) for key in OBS_KEYS}
        task = np.zeros(n, dtype=np.int64) if self.multitask else None
        inputs = model_inputs(
            rows, np.ones(n, dtype=bool), np.zeros(n, np.float32), np.zeros(n, np.int64), self.device, task
        )
        return inputs, self.policy.initial_state(n, self.device)

    def _envs_down(self, env_ids: np.ndarray) -> None:
        self.writer.drop(env_ids)

    def _envs_back(self, env_ids: np.ndarray) -> None:
        index = torch.from_numpy(env_ids).to(self.device)
        for s in self.state:
            s.index_fill_(0, index, 0)

    # --- one batch -------------------------------------------------------------------------------------------
    def step(self, batch: list[Arrival]) -> None:
        """Act on a batch of arrivals and record it (public for tests that drive the batcher by hand)."""
        offsets = self.envs.offsets
        g = _join([offsets[a.server] + a.local_ids for a in batch])
        rows = {key: _cat([a.results[key] for a in batch]) for key in OBS_KEYS}
        rows["done"], rows["truncated"], rows["reward"] = self._arrive(batch, g)
        rows["last_action"] = self.last_action[g]
        rows["task"] = self.env_task[g]
        task = rows["task"] if self.multitask else None
        inputs = model_inputs(rows, rows["done"], rows["reward"], rows["last_action"], self.device, task)
        # One index tensor per batch where torch indexes the state (a GPU); none on the CPU or for a stateless policy.
        index = torch.from_numpy(g).to(self.device) if self._state_rows is None and self.state else None
        pre_state = self._gather_state(g, index)

        t0 = time.perf_counter()
        logits, actions, new_state, version = self.policy.act(inputs, pre_state)
        actions_np = actions.cpu().numpy()
        self.inference_s += time.perf_counter() - t0
        self.io.send(batch, self.actions.to_native(rows["task"], actions_np) if self.multitask else actions_np)

        self._scatter_state(g, index, new_state)
        self.last_action[g] = actions_np
        rows["action"] = actions_np
        rows["policy_logits"] = logits.cpu().numpy()
        rows["policy_version"] = np.full(len(g), version, dtype=np.int64)
        up = self.envs.envs_up(g)
        if not up.all():
            # An env whose server went down during this batch has no buffer to write into: its step is dropped.
            keep = np.flatnonzero(up)
            g, rows = g[keep], {key: value[keep] for key, value in rows.items()}
            pre_state = tuple(s.index_select(0, torch.from_numpy(keep).to(s.device)) for s in pre_state)
        self.writer.record(g, rows, pre_state)
        stepped = [a for a in batch if not a.reset]
        self.steps += int(sum(len(a) for a in stepped))
        if stepped:
            envs = _join([offsets[a.server] + a.local_ids for a in stepped])
            self.frames += int(self.env_skip[envs].sum())
            if self.multitask:
                self.task_frames += np.bincount(
                    self.env_task[envs], weights=self.env_skip[envs], minlength=len(self.task_frames)
                ).astype(np.int64)
        self.batches += 1

    def _gather_state(self, g: np.ndarray, index: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """The recurrent state of envs `g` (`index` on the device), a copy: the batch's pre-step state, which the
        rollouts keep."""
        if self._state_rows is not None:
            return tuple(torch.from_numpy(rows[g]) for rows in self._state_rows)
        return () if index is None else tuple(s.index_select(0, index) for s in self.state)

    def _scatter_state(self, g: np.ndarray, index: torch.Tensor | None, new_state: tuple[torch.Tensor, ...]) -> None:
        if self._state_rows is not None:
            for rows, new in zip(self._state_rows, new_state, strict=True):
                rows[g] = new.numpy()
        elif index is not None:
            for s, new in zip(self.state, new_state, strict=True):
                s.index_copy_(0, index, new)

    def _arrive(self, batch: list[Arrival], g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`done`, `truncated` and the training reward [n] for the steps that led to the batch's observations (envs
        `g`); finished episodes go to the episode log."""
        if len(batch) > 1 and any(a.reset for a in batch):
            # First observations (the run's start, a restarted server) among steps: rare, one arrival at a time.
            offsets = self.envs.offsets
            parts = [self._arrive([a], offsets[a.server] + a.local_ids) for a in batch]
            return tuple(_join([part[i] for part in parts]) for i in range(3))  # type: ignore[return-value]
        if batch[0].reset:
            return transition(self.shaper, g, batch[0].results, reset=True)
        # One shaper call for the whole batch, not one per arrival: its cost is per call, and an env is in a batch
        # at most once (it has one step in flight), so joining arrivals changes nothing.
        r = {
            key: _join([a.results[key] for a in batch]) for key in ("done", "truncated", "vars", "reward", "final_vars")
        }
        ended, truncated, reward = transition(self.shaper, g, r)
        if ended.any():
            r.update({key: _join([a.results[key] for a in batch]) for key in EPISODE_KEYS})
            self.episode_log.record(r, ended, truncated, g)
        return ended, truncated, reward

    # --- statistics ------------------------------------------------------------------------------------------
    def episode_stats(self) -> dict[str, float | None]:
        """Mean return, length, kills and success rate over the last 100 finished episodes (None before the first),
        each task's and the suite score in a multi-task run, and the mean per-episode sum of each reward term."""
        stats = {**self.episode_log.stats(), **self.shaper.term_stats()}
        if self.multitask:
            # Each task's share of the frames acted since this process started (the tasks' frame skips differ).
            for name, frames in zip(self.envs.task_names, self.task_frames.tolist(), strict=True):
                stats[f"{task_label(name)}/env_frames"] = float(frames)
        return stats


def _join(arrays: list[np.ndarray]) -> np.ndarray:
    """One array of a batch's rows; a single part as it is (read-only views stay read-only)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _cat(arrays: list[np.ndarray]) -> np.ndarray:
    """One array of a batch's rows. The client's arrays are read-only views of ZeroMQ frames, which torch refuses
    to wrap without a warning; one memcpy of a batch (~25 KB per env) is cheap next to a step."""
    return arrays[0].copy() if len(arrays) == 1 else np.concatenate(arrays)
