"""The job store engines the protocol suite runs against.

An engine is a function of a fresh folder that returns an opener: each call of the opener is a
new handle (connection, process view) on the *same* store, so the suite can check what two
processes see. A new engine adds one entry to ENGINES (skipped where its server is absent).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from node.store import JobStore, SqliteJobStore

Opener = Callable[[], JobStore]


def sqlite_engine(folder: Path) -> Opener:
    return lambda: SqliteJobStore(folder / "radnode.db")


ENGINES = [pytest.param(sqlite_engine, id="sqlite")]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens handles on one empty store; closes them all at the end."""
    make = request.param(tmp_path)
    handles: list[JobStore] = []

    def opener() -> JobStore:
        handle = make()
        handles.append(handle)
        return handle

    yield opener
    for handle in handles:
        handle.close()


@pytest.fixture
def store(engine: Opener) -> JobStore:
    return engine()
