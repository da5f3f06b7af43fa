"""Test data: the shared deterministic generator of ../shared/bench/gen_products.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

GENERATOR = Path(__file__).resolve().parents[3] / "shared" / "bench" / "gen_products.py"


def generate(tmp: Path, rows: int, *args: str) -> tuple[bytes, dict[str, object]]:
    out = tmp / f"feed-{rows}-{'-'.join(a.strip('-') for a in args) or 'plain'}.csv"
    proc = subprocess.run(
        [sys.executable, str(GENERATOR), "--rows", str(rows), "--out", str(out), *args],
        capture_output=True,
        check=True,
        text=True,
    )
    summary: dict[str, object] = json.loads(proc.stderr.strip().splitlines()[-1])
    return out.read_bytes(), summary
