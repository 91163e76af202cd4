"""The job store is the only part of the node that speaks to a database: no module outside
``node/store/`` imports a database driver or holds SQL (tests: only ``tests/store/``, which
builds a store of an old release by hand)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DRIVER = re.compile(r"^\s*(import|from)\s+(sqlite3|psycopg|psycopg2|asyncpg|apsw)\b", re.M)
SQL = re.compile(r"\bSELECT\b[^\n]*\bFROM\b|\bINSERT INTO\b|\bUPDATE \w+ SET\b|\bDELETE FROM\b"
                 r"|\bCREATE (TABLE|INDEX)\b|\bPRAGMA\b")


def _outside_the_store() -> list[Path]:
    files = []
    for top in ("node", "tests", "bench"):
        for path in sorted((REPO / top).rglob("*.py")):
            rel = path.relative_to(REPO)
            if rel.parts[:2] not in (("node", "store"), ("tests", "store")):
                files.append(path)
    return files


def test_no_module_outside_the_store_imports_a_database_driver() -> None:
    files = _outside_the_store()
    assert len(files) > 50  # the scan sees the code
    found = [str(p.relative_to(REPO)) for p in files if DRIVER.search(p.read_text())]
    assert found == []


def test_no_module_outside_the_store_writes_sql() -> None:
    found = [f"{p.relative_to(REPO)}: {m.group(0)}" for p in _outside_the_store()
             for m in SQL.finditer(p.read_text())]
    assert found == []
