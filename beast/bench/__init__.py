"""`run.py --mode=bench`: the seed's "Quick Diagnosis" table, measured on this machine."""

from __future__ import annotations

import os
import platform

import torch

from beast.bench.report import BenchRow, print_rows
from beast.config import Config
from beast.device import resolve_device, set_intra_op_threads


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    threads = torch.get_num_threads()
    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__}, {threads} torch threads"


def main(cfg: Config) -> int:
    from beast.bench import envs, model, system, wire

    set_intra_op_threads(cfg.num_threads, resolve_device(cfg.device))  # as training would run
    rows: list[BenchRow] = []
    rows += envs.run(cfg)
    rows += model.run(cfg)
    rows += system.run(cfg)
    rows += wire.run(cfg)
    print_rows(rows, cfg.json, machine_description())
    return 0
