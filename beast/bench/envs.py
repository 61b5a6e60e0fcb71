"""Env throughput: the C++ env server against the raw `vizdoom` Python ceiling, for each game count K.

The ceiling is what a Python actor pool could get at best: K `vizdoom.DoomGame`s stepped by K threads with random
actions, each step fetching the state the way an agent must (screen, depth, labels and audio buffers on, as in the
server; no preprocessing, no transport). The server is measured the way the batcher drives it: every env is kept
busy through the async `send`/`recv` exchange: each `recv` takes every env that has finished, and one `send` gives
them all their next random actions at once.

Units: a step is one agent decision, a frame one engine tic (frames = steps x frame skip).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time

import numpy as np
import vizdoom as vzd

from beast.bench.report import BenchRow
from beast.config import Config
from beast.envs.client import AsyncEnvClient
from beast.envs.scenarios import resolve_scenario
from beast.envs.server import EnvServer

WARMUP_S = 1.0  # excluded from every measurement: first renders, caches, thread start-up
RECV_TIMEOUT_MS = 30_000


def make_raw_game(cfg: Config, seed: int, config_dir: str) -> vzd.DoomGame:
    """A game configured like the server's (envserver/src/doom_env.cpp): same buffers, format, audio settings.
    The engine writes its _vizdoom.ini into `config_dir` (as the server's engines do into the server's temp dir),
    not into the current directory."""
    game = vzd.DoomGame()
    game.load_config(str(resolve_scenario(cfg.scenario)))
    game.set_doom_config_path(os.path.join(config_dir, "_vizdoom.ini"))
    game.set_screen_resolution(getattr(vzd.ScreenResolution, cfg.screen_resolution))
    game.set_screen_format(vzd.ScreenFormat.CRCGCB)
    game.set_window_visible(False)
    game.set_mode(vzd.Mode.PLAYER)
    game.set_depth_buffer_enabled(True)
    game.set_labels_buffer_enabled(True)
    game.set_audio_buffer_enabled(True)
    game.set_audio_sampling_rate(vzd.SamplingRate.SR_11025)
    game.set_audio_buffer_size(4)
    game.add_game_args("+snd_efx 0")  # openal-soft 1.19.1 aborts the engine in its EFX path (see doom_env.cpp)
    game.set_seed(seed)
    game.init()
    return game


def raw_steps_per_second(cfg: Config, k: int) -> float:
    """Steps/s of K raw games in K threads, measured over cfg.bench_seconds after a warm-up."""
    with tempfile.TemporaryDirectory(prefix="beast-bench-raw-") as config_dir:
        # The engine also makes a `./_vizdoom/` cache folder in its working directory, which it inherits from us.
        with contextlib.chdir(config_dir):
            games = [make_raw_game(cfg, cfg.seed + i, config_dir) for i in range(k)]
        return _raw_steps_per_second(cfg, k, games)


def _raw_steps_per_second(cfg: Config, k: int, games: list[vzd.DoomGame]) -> float:
    counts = [0] * k
    start = threading.Barrier(k + 1)
    stop = threading.Event()

    def actor(i: int) -> None:
        game, rng = games[i], np.random.default_rng(cfg.seed + i)
        buttons = game.get_available_buttons_size()
        actions = np.eye(buttons).tolist()
        start.wait()
        while not stop.is_set():
            game.make_action(actions[rng.integers(buttons)], cfg.frame_skip)
            if game.is_episode_finished():
                game.new_episode()
            game.get_state()  # an agent needs the observation; this is where the buffers are copied out
            counts[i] += 1

    threads = [threading.Thread(target=actor, args=(i,), daemon=True) for i in range(k)]
    try:
        for t in threads:
            t.start()
        start.wait()
        time.sleep(WARMUP_S)
        before, t0 = sum(counts), time.perf_counter()
        time.sleep(cfg.bench_seconds)
        steps, elapsed = sum(counts) - before, time.perf_counter() - t0
    finally:
        stop.set()
        for t in threads:
            t.join()
        for game in games:
            game.close()
    return steps / elapsed


def server_steps_per_second(cfg: Config, k: int) -> float:
    """Steps/s of one env server with K games, every env always stepping, over cfg.bench_seconds."""
    server = EnvServer(
        scenario=cfg.scenario,
        num_envs=k,
        seed=cfg.seed,
        frame_skip=cfg.frame_skip,
        screen_resolution=cfg.screen_resolution,
        enemy_classes=cfg.enemy_class_list(),
        binary=cfg.envserver_binary,
    )
    rng = np.random.default_rng(cfg.seed)
    with server, AsyncEnvClient(server.address) as client:
        num_actions = client.info.num_actions
        # Random actions drawn in advance: a Generator call per batch (~15 us) would be the bench's own cost, as
        # large as decoding the results; the raw side draws one action per step (~3 us) either way.
        actions = rng.integers(num_actions, size=1 << 16, dtype=np.int32)
        client.reset()
        client.send(np.arange(k), actions[:k])

        def pump(seconds: float) -> int:
            steps, deadline = 0, time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                env_ids, _ = client.recv(timeout_ms=RECV_TIMEOUT_MS)
                start = steps % (len(actions) - k)
                client.send(env_ids, actions[start : start + len(env_ids)])
                steps += len(env_ids)
            return steps

        pump(WARMUP_S)
        t0 = time.perf_counter()
        steps = pump(cfg.bench_seconds)
        elapsed = time.perf_counter() - t0
        # Drain what is still in flight so the server closes idle games, not stepping ones.
        pending = k
        while pending > 0:
            env_ids, _ = client.recv(timeout_ms=RECV_TIMEOUT_MS)
            pending -= len(env_ids)
    return steps / elapsed


def run(cfg: Config) -> list[BenchRow]:
    """For each K in cfg.bench_env_counts(): raw ceiling and server, steps/s and frames/s, and their ratio."""
    rows: list[BenchRow] = []
    setup = f"{cfg.scenario}, {cfg.screen_resolution}, frame skip {cfg.frame_skip}, depth+labels+audio"
    for k in cfg.bench_env_counts():
        raw = raw_steps_per_second(cfg, k)
        served = server_steps_per_second(cfg, k)
        for name, value in ((f"raw vizdoom, {k} games/{k} threads", raw), (f"env server, {k} games", served)):
            rows.append(BenchRow("env", name, value, "steps/s", setup))
            rows.append(BenchRow("env", name, value * cfg.frame_skip, "frames/s", setup))
        rows.append(BenchRow("env", f"server / raw, {k} games", served / raw, "ratio", "target >= 1.0"))
    return rows
