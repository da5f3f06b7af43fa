"""Test data: the project's deterministic feed generator (bench/genfeed.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import genfeed

_OPTIONS = {
    "--seed": "seed",
    "--base-seed": "base_seed",
    "--change-pct": "change_pct",
    "--drop-pct": "drop_pct",
    "--dirty-pct": "dirty_pct",
    "--messy-pct": "messy_pct",
}


def generate(tmp: Path, rows: int, *args: str) -> tuple[bytes, dict[str, Any]]:
    """A feed of ``rows`` rows, with the generator's command-line options; (bytes, summary)."""
    options: dict[str, Any] = {}
    pairs = iter(args)
    for flag in pairs:
        value = next(pairs)
        options[_OPTIONS[flag]] = int(value) if flag.endswith("seed") else float(value)
    out = tmp / f"feed-{rows}-{'-'.join(a.strip('-') for a in args) or 'plain'}.csv"
    summary = genfeed.generate(out, rows, **options)
    return out.read_bytes(), summary
