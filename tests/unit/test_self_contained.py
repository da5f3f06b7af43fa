"""The repository stands alone: no file reads, runs or links anything outside it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP = {".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "data"}
# Spelled in pieces, so that this file does not itself contain what it looks for.
BRIEF = "shared"
OUTSIDE = (f"../{BRIEF}", f"{BRIEF}/design", f"{BRIEF}/bench", f"{BRIEF}/seeds")


def _files() -> list[Path]:
    found = []
    for path in ROOT.rglob("*"):
        parts = set(path.relative_to(ROOT).parts)
        if path.is_file() and not parts & SKIP and "__pycache__" not in parts:
            found.append(path)
    return found


def test_no_file_points_outside_the_repository():
    me = Path(__file__).resolve()
    offenders = []
    for path in _files():
        if path == me or path.suffix in (".csv", ".gz", ".json", ".pyc"):
            continue
        text = path.read_text(errors="replace")
        offenders += [f"{path.relative_to(ROOT)}: {s}" for s in OUTSIDE if s in text]
    assert offenders == []
