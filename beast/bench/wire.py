"""What one env step costs on the wire, and what a cheap codec would save (docs/scaling.md).

The bytes are those of real results from the env server (every array of one env's step, as the protocol's body
carries them), playing the configured scenario with random actions. The codec is zlib at level 1 (the standard
library's fastest setting), applied per env step as a server would before sending: its ratio on these
observations, and its speed on one core, compressing and decompressing.
"""

from __future__ import annotations

import time
import zlib

import numpy as np

from beast.bench.report import BenchRow
from beast.config import Config
from beast.envs.client import EnvClient
from beast.envs.server import EnvServer

SAMPLE_STEPS = 200  # lockstep steps of every env: enough frames of play for stable ratios
CODEC_LEVEL = 1


def step_payloads(cfg: Config, steps: int | None = None) -> list[bytes]:
    """The bytes of each env step's results: one server of `--envs-per-server` games, `steps` random steps."""
    steps = SAMPLE_STEPS if steps is None else steps
    rng = np.random.default_rng(cfg.seed)
    payloads: list[bytes] = []
    with EnvServer.from_config(cfg) as server, EnvClient(server.address) as client:
        client.reset()
        for _ in range(steps):
            results = client.step(rng.integers(client.info.num_actions, size=client.info.num_envs))
            for env in range(client.info.num_envs):
                payloads.append(b"".join(np.ascontiguousarray(a[env]).tobytes() for a in results.values()))
    return payloads


def run(cfg: Config) -> list[BenchRow]:
    payloads = step_payloads(cfg)
    raw = sum(len(p) for p in payloads)
    t0 = time.perf_counter()
    packed = [zlib.compress(p, CODEC_LEVEL) for p in payloads]
    compress_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in packed:
        zlib.decompress(p)
    decompress_s = time.perf_counter() - t0
    small = sum(len(p) for p in packed)
    sample = f"{cfg.scenario}, {len(payloads)} env steps of random play"
    return [
        BenchRow("wire", "results per env step", raw / len(payloads), "bytes", sample),
        BenchRow("wire", f"zlib level {CODEC_LEVEL}: compressed size", raw / small, "ratio", sample),
        BenchRow("wire", f"zlib level {CODEC_LEVEL}: compress, one core", raw / compress_s / 1e6, "MB/s", sample),
        BenchRow("wire", f"zlib level {CODEC_LEVEL}: decompress, one core", raw / decompress_s / 1e6, "MB/s", sample),
    ]
