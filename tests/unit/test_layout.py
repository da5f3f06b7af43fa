"""The layout keeps its promises: the core imports neither process, SQL lives in the store,
and one module writes a job's status."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*ROOT.glob("service/**/*.py"), *ROOT.glob("consumer/**/*.py")])
# Infrastructure that owns the database itself, not the product's tables.
SQL_INFRASTRUCTURE = {"service/core/db.py", "service/core/migrate.py", "service/core/rehash.py"}
SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT INTO|UPDATE \w+( \w+)? SET|DELETE FROM)\b", re.S)
WRITES_STATUS = re.compile(
    r"\bUPDATE jobs\b(?:(?!\bWHERE\b).)*\bstatus\s*=|\bINSERT INTO jobs\b", re.S | re.I
)


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def strings(path: Path) -> list[str]:
    """Every string literal of a module (f-strings by their literal parts), docstrings out."""
    tree = ast.parse(path.read_text())
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            found.append(
                "".join(v.value if isinstance(v, ast.Constant) else "?" for v in node.values)
            )
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
        ):
            found.append(node.value)
    return found


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_only_the_lifecycle_module_writes_a_jobs_status():
    writers = {rel(p) for p in SOURCES if any(WRITES_STATUS.search(s) for s in strings(p))}
    assert writers == {"service/core/store/lifecycle.py"}


def test_sql_lives_in_the_store():
    outside = {
        rel(p): [s[:60] for s in strings(p) if SQL.search(s)]
        for p in SOURCES
        if not rel(p).startswith("service/core/store/") and rel(p) not in SQL_INFRASTRUCTURE
    }
    assert {k: v for k, v in outside.items() if v} == {}
    # The pattern does find the store's statements (the test can fail).
    store = ROOT / "service/core/store/jobs.py"
    assert any(SQL.search(s) for s in strings(store))


def test_the_core_imports_neither_process_and_the_processes_not_each_other():
    for path in SOURCES:
        names = imported(path)
        where = rel(path)
        if where.startswith("service/core/"):
            assert not {n for n in names if n.startswith(("service.gateway", "service.cli"))}, where
            assert not {n for n in names if n.split(".")[0] == "consumer"}, where
        if where.startswith("consumer/"):
            assert not {n for n in names if n.startswith(("service.gateway", "service.cli"))}, where
        if where.startswith("service/"):
            assert not {n for n in names if n.split(".")[0] == "consumer"}, where


def test_the_state_table_names_every_transition_function_and_only_those():
    import inspect

    from service.core.store import lifecycle

    section = (ROOT / "docs/operations.md").read_text().split("## Job states", 1)[1]
    rows = re.findall(r"^\| (?:submission|validation) \|.*\| ([^|]+) \|$", section, re.M)
    documented = {
        name.replace("(s)", variant)
        for cell in rows
        for name in re.findall(r"`([\w()]+)`", cell)
        for variant in ("", "s")
    }
    public = {
        name
        for name, fn in vars(lifecycle).items()
        if inspect.iscoroutinefunction(fn) and not name.startswith("_")
    }
    # Lease renewal and progress keep a running job running; they change no status.
    assert documented == public - {"renew_lease", "renew_upload", "write_progress", "lease"}


def test_every_import_of_the_benchmarks_resolves():
    """bench/ is run by ``make bench`` only: an import a move broke would show there first."""
    import importlib

    for path in sorted(ROOT.glob("bench/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] not in ("service", "consumer"):
                    continue
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name) or importlib.util.find_spec(
                        f"{node.module}.{alias.name}"
                    ), f"{path.name}: from {node.module} import {alias.name}"
