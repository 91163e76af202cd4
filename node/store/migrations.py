"""Schema versions of the job store, and the ordered steps from each to the next.

A store records the version of its schema (SQLite: ``PRAGMA user_version``; an engine without
it keeps a one-row version table). Opening a store runs every step above its version, in order,
in one transaction with the new version number: a step that fails leaves the store as it was.
A store newer than this release refuses to open (:class:`StoreVersionError`), so an older node
never writes rows it does not understand.

Rules for a step: never edit a released step (stores in the field have run it); add a new one
at the end, numbered one above the last. Version 1 is the schema of the first release (commit
0a34e91), which recorded no version: its statements create nothing on such a store, so an
unversioned store and an empty file both start from version 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from node.errors import StartupError


class StoreVersionError(StartupError):
    """The store was written by a newer release (or its version is not one this release
    knows): the node must not start on it."""


@dataclass(frozen=True)
class Migration:
    version: int  # the schema version after this step
    description: str
    statements: tuple[str, ...]


def pending(current: int, migrations: Sequence[Migration]) -> list[Migration]:
    """The steps to run on a store at version ``current``, in order."""
    latest = migrations[-1].version if migrations else 0
    if current > latest or current < 0:
        raise StoreVersionError(
            f"the job store has schema version {current}; this release knows versions up to "
            f"{latest}: run the release that wrote it, or a newer one")
    return [m for m in migrations if m.version > current]


def check_sequence(migrations: Sequence[Migration]) -> None:
    """Steps are numbered 1, 2, 3... with no gap (a programming error otherwise)."""
    numbers = [m.version for m in migrations]
    if numbers != list(range(1, len(numbers) + 1)):
        raise AssertionError(f"migration versions must be 1..n in order, not {numbers}")


# -- SQLite -----------------------------------------------------------------------------------

# Version 1: the schema at commit 0a34e91 (the release before versions). Frozen.
_SQLITE_V1 = (
    """CREATE TABLE IF NOT EXISTS studies (
    study_uid      TEXT PRIMARY KEY,
    state          TEXT NOT NULL,
    opened_at      REAL NOT NULL,
    last_received  REAL NOT NULL,
    completed_at   REAL,
    forced         INTEGER NOT NULL DEFAULT 0,
    generation     INTEGER NOT NULL DEFAULT 0
)""",
    """CREATE TABLE IF NOT EXISTS series (
    series_uid     TEXT PRIMARY KEY,
    study_uid      TEXT NOT NULL,
    modality       TEXT NOT NULL DEFAULT '',
    calling_ae     TEXT NOT NULL DEFAULT '',
    state          TEXT NOT NULL,
    opened_at      REAL NOT NULL,
    last_received  REAL NOT NULL,
    completed_at   REAL,
    forced         INTEGER NOT NULL DEFAULT 0,
    generation     INTEGER NOT NULL DEFAULT 0,
    instance_count INTEGER NOT NULL DEFAULT 0
)""",
    "CREATE INDEX IF NOT EXISTS series_by_study ON series(study_uid)",
    "CREATE INDEX IF NOT EXISTS series_by_state ON series(state)",
    """CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid    TEXT NOT NULL,
    series_uid       TEXT NOT NULL,
    study_uid        TEXT NOT NULL,
    path             TEXT NOT NULL,
    size             INTEGER NOT NULL,
    transfer_syntax  TEXT NOT NULL,
    calling_ae       TEXT NOT NULL DEFAULT '',
    received_at      REAL NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS instances_by_series ON instances(series_uid)",
    """CREATE TABLE IF NOT EXISTS jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    series_uid   TEXT NOT NULL,
    study_uid    TEXT NOT NULL,
    model        TEXT NOT NULL,
    route        TEXT NOT NULL,
    generation   INTEGER NOT NULL,
    state        TEXT NOT NULL,
    created_at   REAL NOT NULL,
    started_at   REAL,
    finished_at  REAL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    error        TEXT,
    timings      TEXT,
    result       TEXT,
    UNIQUE(series_uid, model, generation)
)""",
    "CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state)",
    """CREATE TABLE IF NOT EXISTS outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id           INTEGER,
    destination      TEXT NOT NULL,
    path             TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    sop_class_uid    TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL,
    created_at       REAL NOT NULL,
    sent_at          REAL,
    last_error       TEXT,
    UNIQUE(destination, sop_instance_uid)
)""",
    "CREATE INDEX IF NOT EXISTS outbox_by_state ON outbox(state, next_attempt_at)",
)

SQLITE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the first release's schema (commit 0a34e91), which recorded no version",
              _SQLITE_V1),
    Migration(2, "index studies by state: studies_due reads the receiving studies on every "
                 "scheduler tick, and scanned the whole table",
              ("CREATE INDEX IF NOT EXISTS studies_by_state ON studies(state)",)),
)

check_sequence(SQLITE_MIGRATIONS)
SQLITE_VERSION = SQLITE_MIGRATIONS[-1].version
