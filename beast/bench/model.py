"""Model throughput: the learner's forward+backward at [T=32, B=32] and acting at [T=1, B=64], for each core.

On CPU every core is measured, the learner in fp32 and under bf16 autocast (`--precision`); with CUDA also the
Mamba scan paths side by side (Triton kernel vs PyTorch reference) in fp32 and under bf16 autocast. A sample is
one [T, B] element: samples/s = T * B * iterations / s.

This module is also the GPU harness's one concession to a partial mamba-ssm install (see docs/gpu.md):
`prepare_mamba_ssm_import` stubs the CUDA selective-scan extension that a MAMBA_SKIP_CUDA_BUILD build lacks, so the
Triton SSD kernels, which never call it, can be imported. The product code never does this.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import time
import types
from collections.abc import Callable

import torch

from beast.bench.report import BenchRow
from beast.config import Config
from beast.learn.precision import learner_autocast
from beast.model import build_model

NUM_ACTIONS = 7
LEARNER_SHAPE = (32, 32)  # T, B
ACTING_BATCH = 64


def prepare_mamba_ssm_import() -> bool:
    """Make `mamba_ssm`'s package import survive a missing `selective_scan_cuda`; True if a stub was installed.

    mamba_ssm/__init__ imports its Mamba1 selective-scan interface, which imports the compiled
    `selective_scan_cuda` unconditionally. A source build with MAMBA_SKIP_CUDA_BUILD=TRUE has no such module, but
    the SSD path (`mamba_ssm.ops.triton.ssd_combined`) is pure Triton and never calls it. An empty module in its
    place lets the import go through; anything that did call it would fail with AttributeError, not silently.
    """
    if "selective_scan_cuda" in sys.modules or importlib.util.find_spec("selective_scan_cuda") is not None:
        return False
    if importlib.util.find_spec("mamba_ssm") is None:
        return False
    sys.modules["selective_scan_cuda"] = types.ModuleType("selective_scan_cuda")
    return True


def fake_inputs(steps: int, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Env-server-shaped random inputs [T, B, ...] with a few episode starts."""
    T, B = steps, batch
    return {
        "rgb": torch.randint(0, 256, (T, B, 3, 64, 64), dtype=torch.uint8, device=device),
        "depth": torch.randint(0, 256, (T, B, 1, 64, 64), dtype=torch.uint8, device=device),
        "enemy": (torch.rand(T, B, 1, 64, 64, device=device) < 0.05).to(torch.uint8),
        "audio": torch.randint(-32768, 32768, (T, B, 2, 1024), dtype=torch.int16, device=device),
        "last_action": torch.randint(0, NUM_ACTIONS, (T, B), device=device),
        "reward": torch.randn(T, B, device=device),
        "done": torch.rand(T, B, device=device) < 0.02,
    }


def fake_batch(slots: int, batch: int, num_actions: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A learner's batch [T+1, B, ...] of random rollouts: `fake_inputs` and what the actors record beside them."""
    fake = fake_inputs(slots, batch, device)
    fake["last_action"] %= num_actions
    fake["truncated"] = torch.zeros_like(fake["done"])
    fake["action"] = torch.randint(num_actions, (slots, batch), device=device)
    fake["policy_logits"] = torch.randn(slots, batch, num_actions, device=device)
    fake["policy_version"] = torch.zeros(slots, batch, dtype=torch.int64, device=device)
    return fake


def _timed(step: Callable[[], None], seconds: float, device: torch.device) -> tuple[float, int]:
    """Run `step` once to warm up, then until `seconds` have passed (at least once); (elapsed, iterations)."""
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    iters = 0
    while True:
        step()
        iters += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed, iters


def learner_row(cfg: Config, device: torch.device, label: str) -> BenchRow:
    T, B = LEARNER_SHAPE
    model = build_model(cfg, NUM_ACTIONS).to(device).train()
    inputs = fake_inputs(T, B, device)
    state = model.initial_state(B, device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with learner_autocast(cfg.precision, device):
            out, _ = model(inputs, state)
        loss = out["policy_logits"].logsumexp(-1).mean() + out["baseline"].pow(2).mean()
        loss.backward()

    elapsed, iters = _timed(step, cfg.bench_seconds, device)
    return BenchRow(
        "model",
        f"learner fwd+bwd {label}",
        T * B * iters / elapsed,
        "samples/s",
        f"T={T} B={B}, {iters} iters in {elapsed:.1f}s",
    )


def acting_row(cfg: Config, device: torch.device, label: str) -> BenchRow:
    model = build_model(cfg, NUM_ACTIONS).to(device).train()
    inputs = fake_inputs(1, ACTING_BATCH, device)
    state = model.initial_state(ACTING_BATCH, device)

    def step() -> None:
        nonlocal state
        with torch.no_grad():
            _, state = model(inputs, state)

    elapsed, iters = _timed(step, cfg.bench_seconds, device)
    return BenchRow(
        "model",
        f"acting {label}",
        ACTING_BATCH * iters / elapsed,
        "samples/s",
        f"T=1 B={ACTING_BATCH}, {iters} iters in {elapsed:.1f}s",
    )


def run(cfg: Config) -> list[BenchRow]:
    """Rows for each core on CPU, and the Mamba scan paths on CUDA when it is present."""
    rows: list[BenchRow] = []
    cpu = torch.device("cpu")
    for core in ("mamba", "lstm", "none"):
        core_cfg = dataclasses.replace(cfg, core=core, mamba_backend="torch")
        label = f"{core} cpu" + (" (torch scan)" if core == "mamba" else "")
        for precision in ("fp32", "bf16"):
            rows.append(learner_row(dataclasses.replace(core_cfg, precision=precision), cpu, f"{label} {precision}"))
        rows.append(acting_row(core_cfg, cpu, label))
    if torch.cuda.is_available():
        rows += _gpu_rows(cfg, torch.device("cuda"))
    return rows


def _gpu_rows(cfg: Config, device: torch.device) -> list[BenchRow]:
    from beast.model.mamba2 import load_kernel

    prepare_mamba_ssm_import()
    backends = ["torch"] + (["cuda"] if load_kernel()[0] is not None else [])
    rows: list[BenchRow] = []
    for backend in backends:
        scan = "triton" if backend == "cuda" else "torch"
        for precision in ("fp32", "bf16"):
            mamba_cfg = dataclasses.replace(cfg, core="mamba", mamba_backend=backend, precision=precision)
            rows.append(learner_row(mamba_cfg, device, f"mamba cuda {scan} {precision}"))
    rows.append(acting_row(dataclasses.replace(cfg, core="mamba", mamba_backend="torch"), device, "mamba cuda"))
    for core in ("lstm", "none"):
        core_cfg = dataclasses.replace(cfg, core=core, precision="fp32")
        rows.append(learner_row(core_cfg, device, f"{core} cuda fp32"))
        rows.append(acting_row(core_cfg, device, f"{core} cuda"))
    return rows


if __name__ == "__main__":  # python -m beast.bench.model [seconds]: the model rows alone
    from beast.bench import machine_description
    from beast.bench.report import print_rows

    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else Config().bench_seconds
    print_rows(run(Config(bench_seconds=seconds)), as_json=False, machine=machine_description())
