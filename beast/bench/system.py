"""System throughput: the trainer's parts measured side by side in one run, and which one limits training.

Rows (frames = steps x frame skip; every figure from this run, same cores):
  * env ceiling — the raw `vizdoom` ceiling (`bench.envs.raw_steps_per_second`) for the run's env count, and one
    env server driven by a bare send/recv loop;
  * sampling, trivial policy — the real batcher, buffer pool and servers with uniform random actions and no model,
    a stand-in learner freeing every full rollout: the runtime's own overhead, to compare with the ceiling
    (target >= 0.9x);
  * sampling, model in the loop — the same with the inference copy of the configured model acting; the model's
    share of the batcher's time and its capacity (frames per second of inference time);
  * learner — `learn_step` alone on full rollouts from the pool: frames consumed per second;
  * training — batcher and learner together, as `--mode=train` runs them: env and learner frames/s, busy and wait
    fractions;
and the bottleneck: the part with the smallest capacity.
"""

from __future__ import annotations

import threading
import time

from beast.bench.envs import WARMUP_S, raw_steps_per_second, server_steps_per_second
from beast.bench.memory import peak_rss_mib_of_this_process, total_rss_mib
from beast.bench.report import BenchRow
from beast.config import Config
from beast.device import resolve_device
from beast.learn import build_optimizer, build_scheduler, learn_step
from beast.learn.optim import frames_per_learner_step
from beast.model import build_model
from beast.runtime.batcher import Batcher
from beast.runtime.buffers import BufferPool, rollout_specs
from beast.runtime.envs import EnvSet
from beast.runtime.learner_thread import LearnerThread
from beast.runtime.weights import ModelPolicy, PolicyWeights, RandomPolicy


def _drain(pool: BufferPool, stop: threading.Event) -> None:
    """A stand-in learner that frees full rollouts at once, so sampling is measured without the learner."""
    while not stop.is_set():
        ids = pool.take(1, stop, poll_s=0.05)
        if ids is not None:
            pool.release(ids)


def _window(batcher: Batcher, seconds: float, extra: LearnerThread | None = None) -> dict[str, float]:
    """Counters of a running batcher (and learner) over `seconds` after the warm-up: its policy's own (a compile,
    `Batcher._warm_up`), until the first env step, then `WARMUP_S` more."""
    while batcher.steps == 0 and batcher.error is None:
        time.sleep(0.05)
    time.sleep(WARMUP_S)
    b0 = (batcher.steps, batcher.inference_s, batcher.writer.wait_buffer_s, time.perf_counter())
    l0 = (extra.frames, extra.step_s, extra.wait_s) if extra is not None else (0, 0.0, 0.0)
    time.sleep(seconds)
    dt = time.perf_counter() - b0[3]
    out = {
        "steps_per_s": (batcher.steps - b0[0]) / dt,
        "inference_s": batcher.inference_s - b0[1],
        "actor_wait_frac": (batcher.writer.wait_buffer_s - b0[2]) / dt,
        "elapsed": dt,
        "steps": batcher.steps - b0[0],
    }
    if extra is not None:
        out["learner_fps"] = (extra.frames - l0[0]) / dt
        out["learner_busy_frac"] = (extra.step_s - l0[1]) / dt
        out["learner_wait_frac"] = (extra.wait_s - l0[2]) / dt
    return out


def run_system(cfg: Config, mode: str) -> dict[str, float]:
    """mode: "trivial" (random actions), "model" (inference copy acting), "train" (batcher + learner)."""
    device = resolve_device(cfg.device)
    stop = threading.Event()
    envs = EnvSet(cfg)
    threads: list[threading.Thread] = []
    try:
        first = envs.start()
        assert envs.info is not None
        num_actions = envs.num_actions
        specs = rollout_specs(envs.info.obs, num_actions)
        buffers = max(cfg.buffer_count(), envs.num_envs + cfg.batch_size)
        learner = None
        if mode == "trivial":
            pool = BufferPool(buffers, cfg.unroll_length, specs, ())
            policy: RandomPolicy | ModelPolicy = RandomPolicy(num_actions, seed=cfg.seed)
        else:
            model = build_model(cfg, num_actions).to(device)
            weights = PolicyWeights(build_model(cfg, num_actions).to(device))
            weights.publish(model, 0)
            pool = BufferPool(
                buffers, cfg.unroll_length, specs, model.initial_state(1, "cpu"), pin_memory=device.type == "cuda"
            )
            policy = ModelPolicy(weights, cfg, frames_seen=lambda: 0, seed=cfg.seed)
            if mode == "train":
                optimizer = build_optimizer(model.parameters(), cfg)
                learner = LearnerThread(
                    cfg, model, optimizer, build_scheduler(optimizer, cfg), pool, weights, device, stop
                )
        batcher = Batcher(cfg, envs, pool, policy, device, stop, first)
        threads.append(threading.Thread(target=batcher.run, daemon=True))
        consumer = learner.run if learner is not None else (lambda: _drain(pool, stop))
        threads.append(threading.Thread(target=consumer, daemon=True))
        for t in threads:
            t.start()
        result = _window(batcher, cfg.bench_seconds, learner)
        result["num_actions"] = num_actions
        servers = [pid for slot in envs.slots if slot.local is not None for pid in slot.local.process_group()]
        result["server_rss_mib_per_env"] = total_rss_mib(servers) / envs.num_envs
        if batcher.error is not None:
            raise batcher.error
        if learner is not None and learner.error is not None:
            raise learner.error
        return result
    finally:
        stop.set()
        for t in threads:
            t.join(30.0)
        envs.close()


def learner_frames_per_second(cfg: Config, num_actions: int, seconds: float) -> float:
    """`learn_step` alone on random full rollouts [T+1, B]: frames consumed per second."""
    from beast.bench.model import fake_batch

    device = resolve_device(cfg.device)

    model = build_model(cfg, num_actions).to(device).train()
    optimizer = build_optimizer(model.parameters(), cfg)
    T, B = cfg.unroll_length, cfg.batch_size
    batch = fake_batch(T + 1, B, num_actions, device)
    state = model.initial_state(B, device)
    learn_step(model, optimizer, batch, state, cfg)  # warm-up
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or steps < 2:
        learn_step(model, optimizer, batch, state, cfg, learner_version=steps + 1)
        steps += 1
    return steps * frames_per_learner_step(cfg) / (time.perf_counter() - t0)


def run(cfg: Config) -> list[BenchRow]:
    k = cfg.num_envs()
    skip = cfg.frame_skip
    setup = f"{cfg.scenario}, {cfg.num_servers} server(s) x {cfg.envs_per_server} envs, frame skip {skip}"
    model_setup = f"core {cfg.core}, d_model {cfg.d_model}, T={cfg.unroll_length}, B={cfg.batch_size}"
    raw = raw_steps_per_second(cfg, k) * skip
    served = server_steps_per_second(cfg, k) * skip
    trivial = run_system(cfg, "trivial")
    acting = run_system(cfg, "model")
    learner = learner_frames_per_second(cfg, int(trivial["num_actions"]), cfg.bench_seconds)
    train = run_system(cfg, "train")

    trivial_fps = trivial["steps_per_s"] * skip
    acting_fps = acting["steps_per_s"] * skip
    inference_capacity = acting["steps"] * skip / max(acting["inference_s"], 1e-9)
    rows = [
        BenchRow("env", f"raw vizdoom ceiling, {k} games/{k} threads", raw, "frames/s", setup),
        BenchRow("env", f"env server(s) alone, {k} games", served, "frames/s", "bare send/recv loop"),
        BenchRow("system", "sampling, trivial policy", trivial_fps, "frames/s", "batcher + buffers, random actions"),
        BenchRow("system", "trivial sampling / raw ceiling", trivial_fps / raw, "ratio", "target >= 0.9"),
        BenchRow("system", "trivial sampling / env server", trivial_fps / served, "ratio", "runtime overhead"),
        BenchRow("system", "sampling, model in the loop", acting_fps, "frames/s", model_setup),
        BenchRow(
            "inference",
            "inference capacity",
            inference_capacity,
            "frames/s",
            f"per second of model time; model {acting['inference_s'] / acting['elapsed']:.0%} of the batcher's time",
        ),
        BenchRow("learner", "learn_step alone", learner, "frames/s", model_setup),
        BenchRow("train", "training: env frames", train["steps_per_s"] * skip, "frames/s", "batcher + learner"),
        BenchRow(
            "train",
            "training: learner frames",
            train["learner_fps"],
            "frames/s",
            f"learner busy {train['learner_busy_frac']:.0%}, waits {train['learner_wait_frac']:.0%}; "
            f"actors wait {train['actor_wait_frac']:.0%}",
        ),
    ]
    rows += [
        BenchRow(
            "memory",
            "env server RSS per env",
            train["server_rss_mib_per_env"],
            "MiB",
            "server and its engines, while training, over its games",
        ),
        BenchRow("memory", "trainer peak RSS", peak_rss_mib_of_this_process(), "MiB", "this process, after every row"),
    ]
    capacities = {"env": trivial_fps, "inference": inference_capacity, "learner": learner}
    slowest = min(capacities, key=capacities.__getitem__)
    others = ", ".join(f"{name} {value:,.0f}" for name, value in capacities.items())
    rows.append(BenchRow("system", f"bottleneck: {slowest}", capacities[slowest], "frames/s", others))
    return rows
