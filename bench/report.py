"""The benchmarks' one output: a table on stdout and the same as JSON in bench/results/."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
Row = tuple[str, float, str, str, bool]  # case, value, ratio, target, ok


def report(kind: str, title: str, rows: list[Row], **facts: Any) -> Path:
    """Print ``rows`` under ``title`` and write them with ``facts`` to results/KIND-*.json."""
    today = datetime.date.today()
    print(f"\n{title}, {today}, {platform.node()} ({os.cpu_count()} cores)")
    for name, value in facts.items():
        print(f"{name}: {value}")
    width = max(36, *(len(r[0]) for r in rows))
    print(f"\n{'case':{width}} {'value':>10} {'ratio':>8}  {'target':24} ok")
    for name, value, ratio, target, ok in rows:
        print(f"{name:{width}} {value:10.2f} {ratio:>8}  {target:24} {'yes' if ok else 'NO'}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{kind}-{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
    cases = [dict(zip(("case", "value", "ratio", "target", "ok"), r, strict=True)) for r in rows]
    out.write_text(
        json.dumps(
            {
                **facts,
                "date": str(today),
                "machine": platform.node(),
                "cores": os.cpu_count(),
                "cases": cases,
            },
            indent=2,
        )
    )
    print(f"\nwritten to bench/results/{out.name}")
    return out
