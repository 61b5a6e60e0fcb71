"""One row of the "Quick Diagnosis" table, and how the table is shown."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class BenchRow:
    """A measured throughput: `part` is env/inference/learner/model, `name` says what ran and with what shape."""

    part: str
    name: str
    value: float
    unit: str
    detail: str = ""


def print_rows(rows: Sequence[BenchRow], as_json: bool, machine: str) -> None:
    if as_json:
        print(json.dumps({"machine": machine, "rows": [dataclasses.asdict(r) for r in rows]}, indent=2))
        return
    table = Table(title=f"beast bench — {machine}")
    for column in ("part", "what", "value", "unit", "detail"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for row in rows:
        table.add_row(row.part, row.name, f"{row.value:,.1f}", row.unit, row.detail)
    Console().print(table)
