"""Schema versions: a store written by the release before versions (commit 0a34e91) opens with
this release, is migrated, and keeps every row; a newer store refuses to open; a failed step
changes nothing.

This is the one place outside ``node/store/`` that speaks SQLite: it builds the old store by
hand, from the old release's schema, kept here as data.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path

import pytest

from node.errors import StartupError
from node.store import (
    JobState,
    NewJob,
    OutboxState,
    SeriesState,
    SqliteJobStore,
    StoreVersionError,
    open_store,
)
from node.store.migrations import SQLITE_MIGRATIONS, SQLITE_VERSION, Migration, check_sequence
from node.store.sqlite import migrate

# The schema of node/store/jobstore.py at commit 0a34e91, verbatim (a store in the field has it).
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_uid      TEXT PRIMARY KEY,
    state          TEXT NOT NULL,
    opened_at      REAL NOT NULL,
    last_received  REAL NOT NULL,
    completed_at   REAL,
    forced         INTEGER NOT NULL DEFAULT 0,
    generation     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS series (
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
);
CREATE INDEX IF NOT EXISTS series_by_study ON series(study_uid);
CREATE INDEX IF NOT EXISTS series_by_state ON series(state);
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid    TEXT NOT NULL,
    series_uid       TEXT NOT NULL,
    study_uid        TEXT NOT NULL,
    path             TEXT NOT NULL,
    size             INTEGER NOT NULL,
    transfer_syntax  TEXT NOT NULL,
    calling_ae       TEXT NOT NULL DEFAULT '',
    received_at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_series ON instances(series_uid);
CREATE TABLE IF NOT EXISTS jobs (
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
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state);
CREATE TABLE IF NOT EXISTS outbox (
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
);
CREATE INDEX IF NOT EXISTS outbox_by_state ON outbox(state, next_attempt_at);
"""


TABLES = {  # table -> its key, for comparing rows
    "studies": "study_uid", "series": "series_uid", "instances": "sop_instance_uid",
    "jobs": "id", "outbox": "id",
}


def old_store(path: Path) -> None:
    """A store as the release before versions left it: rows in every table and every state."""
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    db.executemany("INSERT INTO studies VALUES (?, ?, ?, ?, ?, ?, ?)", [
        ("1.2.3", "complete", 100.0, 110.0, 130.0, 0, 1),
        ("1.2.4", "receiving", 200.0, 205.5, None, 0, 0),
        ("1.2.5", "complete", 300.0, 300.0, 900.0, 1, 2),
    ])
    db.executemany("INSERT INTO series VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        ("1.2.3.1", "1.2.3", "CT", "CT_SCANNER", "complete", 100.0, 110.0, 120.0, 0, 1, 2),
        ("1.2.3.2", "1.2.3", "CT", "CT_SCANNER", "complete", 101.0, 109.0, 121.0, 1, 3, 1),
        ("1.2.4.1", "1.2.4", "MR", "", "receiving", 200.0, 205.5, None, 0, 0, 1),
        ("1.2.5.1", "1.2.5", "", "X", "complete", 300.0, 300.0, 900.0, 1, 2, 1),
    ])
    db.executemany("INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        ("1.2.3.1.1", CT, "1.2.3.1", "1.2.3", "1.2.3/1.2.3.1/b.dcm", 5120, EXPLICIT,
         "CT_SCANNER", 105.0),
        ("1.2.3.1.2", CT, "1.2.3.1", "1.2.3", "1.2.3/1.2.3.1/a.dcm", 5121, DEFLATED,
         "CT_SCANNER", 110.0),
        ("1.2.3.2.1", CT, "1.2.3.2", "1.2.3", "1.2.3/1.2.3.2/1.dcm", 1, EXPLICIT, "", 109.0),
        ("1.2.4.1.1", MR, "1.2.4.1", "1.2.4", "1.2.4/1.2.4.1/1.dcm", 77, EXPLICIT, "", 205.5),
        ("1.2.5.1.1", CT, "1.2.5.1", "1.2.5", "1.2.5/1.2.5.1/1.dcm", 9, EXPLICIT, "X", 300.0),
    ])
    db.executemany(
        "INSERT INTO jobs (series_uid, study_uid, model, route, generation, state, created_at,"
        " started_at, finished_at, attempts, error, timings, result)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            ("1.2.3.1", "1.2.3", "lung_ct", "ct", 1, "done", 120.0, 121.0, 125.0, 1, None,
             '{"load": 0.5, "infer": 2.25}', '{"labels": [1, 2], "volume_ml": 4200.5}'),
            ("1.2.3.2", "1.2.3", "lung_ct", "ct", 3, "failed", 121.0, 122.0, 123.0, 3,
             "no lungs in the field of view", "{}", None),
            ("1.2.3.1", "1.2.3", "fusion", "study", 1, "queued", 130.0, None, None, 0, None,
             None, None),
            ("1.2.5.1", "1.2.5", "bones", "ct", 2, "running", 900.0, 901.0, None, 2, None,
             None, None),
            ("1.2.5.1", "1.2.5", "lung_ct", "ct", 2, "cancelled", 900.0, None, 950.0, 0,
             "cancelled by the operator", None, None),
        ])
    db.execute("DELETE FROM jobs WHERE id = 5")  # AUTOINCREMENT: id 5 is never used again
    db.executemany(
        "INSERT INTO outbox (job_id, destination, path, sop_instance_uid, sop_class_uid, state,"
        " attempts, next_attempt_at, created_at, sent_at, last_error)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            (1, "pacs", "results/1.2.3.1/seg.dcm", "2.25.1", SEG, "sent", 1, 125.0, 125.0,
             126.0, None),
            (1, "archive", "results/1.2.3.1/seg.dcm", "2.25.1", SEG, "pending", 2, 400.0,
             125.0, None, "association refused"),
            (1, "pacs", "results/1.2.3.1/sr.dcm", "2.25.2", SR, "dead", 5, 500.0, 125.0, None,
             "0xA700 out of resources"),
            (None, "pacs", "manual/x.dcm", "2.25.3", CT, "pending", 0, 130.0, 130.0, None,
             None),
        ])
    db.commit()
    db.close()


def dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(path) as db:
        return {table: db.execute(f"SELECT * FROM {table} ORDER BY {key}").fetchall()
                for table, key in TABLES.items()}


def schema(path: Path) -> dict[str, str]:
    """Every table and index of a database, its SQL with the spacing normalised."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"
                          " AND name NOT LIKE 'sqlite_%'").fetchall()
    return {name: re.sub(r"\s+", " ", sql.replace("IF NOT EXISTS ", "")).strip()
            for name, sql in rows}


def version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
SR = "1.2.840.10008.5.1.4.1.1.88.34"
EXPLICIT = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"


def test_a_store_of_the_previous_release_migrates_and_keeps_every_row(tmp_path: Path) -> None:
    path = tmp_path / "radnode.db"
    old_store(path)
    before = dump(path)
    assert version(path) == 0 and sum(len(rows) for rows in before.values()) == 20

    store = open_store(path)
    assert isinstance(store, SqliteJobStore) and store.migrated_from == 0
    # every row reads back through the protocol as it was written
    assert [s.series_uid for s in store.all_series(SeriesState.COMPLETE)] == [
        "1.2.3.1", "1.2.3.2", "1.2.5.1"]
    assert store.instance_paths("1.2.3.1") == ["1.2.3/1.2.3.1/b.dcm", "1.2.3/1.2.3.1/a.dcm"]
    instance = store.instance("1.2.3.1.2")
    assert instance is not None and (instance.modality, instance.transfer_syntax) == (
        "CT", DEFLATED)
    done = store.job(1)
    assert done is not None
    assert (done.state, done.timings, done.result) == (
        JobState.DONE, {"load": 0.5, "infer": 2.25}, {"labels": [1, 2], "volume_ml": 4200.5})
    assert store.count_jobs() == {"done": 1, "failed": 1, "queued": 1, "running": 1}
    assert store.count_outbox() == {"sent": 1, "pending": 2, "dead": 1}
    dead = store.outbox_items(state=OutboxState.DEAD)
    assert [(i.id, i.attempts, i.last_error) for i in dead] == [
        (3, 5, "0xA700 out of resources")]
    store.close()

    assert version(path) == SQLITE_VERSION
    assert dump(path) == before  # every row, every column, unchanged
    assert "studies_by_state" in schema(path)

    # and the store works on: the old rows move on, new rows take new ids
    store = open_store(path)
    assert store.migrated_from == SQLITE_VERSION  # nothing to do the second time
    claimed = store.claim_job(now=1000.0)
    assert claimed is not None and (claimed.id, claimed.model) == (3, "fusion")
    assert store.retry_job(2)
    series = store.series("1.2.4.1")
    assert series is not None
    assert store.complete_series(series, False, [NewJob("mr", "brain")], now=1001.0) == 1
    (brain,) = store.jobs(series_uid="1.2.4.1")
    assert brain.id == 6  # after the old rows' ids, the deleted one's too
    store.close()


def test_a_new_store_has_the_schema_a_migrated_one_has(tmp_path: Path) -> None:
    old, new = tmp_path / "old.db", tmp_path / "new.db"
    old_store(old)
    SqliteJobStore(old).close()
    store = SqliteJobStore(new)
    assert store.migrated_from == 0
    store.close()
    assert version(new) == version(old) == SQLITE_VERSION
    assert schema(new) == schema(old)


def test_version_1_is_the_schema_of_the_previous_release(tmp_path: Path) -> None:
    """Step 1 must create nothing on an old store: its statements are the old schema."""
    old, v1 = tmp_path / "old.db", tmp_path / "v1.db"
    old_store(old)
    with sqlite3.connect(v1) as db:
        db.isolation_level = None
        migrate(db, SQLITE_MIGRATIONS[:1])
    assert schema(v1) == schema(old)


def test_a_store_of_a_newer_release_refuses_to_open(tmp_path: Path) -> None:
    path = tmp_path / "radnode.db"
    old_store(path)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SQLITE_VERSION + 1}")
    before = dump(path)
    with pytest.raises(StoreVersionError, match=f"schema version {SQLITE_VERSION + 1}"):
        open_store(path)
    assert issubclass(StoreVersionError, StartupError)  # `radnode serve` says it in one line
    assert version(path) == SQLITE_VERSION + 1 and dump(path) == before


def test_a_failing_step_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "radnode.db"
    old_store(path)
    before, shape = dump(path), schema(path)
    broken = (*SQLITE_MIGRATIONS,
              Migration(SQLITE_VERSION + 1, "broken", ("CREATE INDEX x ON no_such_table(a)",)))
    with sqlite3.connect(path) as db:
        db.isolation_level = None
        with pytest.raises(sqlite3.OperationalError):
            migrate(db, broken)
    assert version(path) == 0 and dump(path) == before and schema(path) == shape


def test_stores_opened_at_once_migrate_once(tmp_path: Path) -> None:
    path = tmp_path / "radnode.db"
    old_store(path)
    before = dump(path)
    start = threading.Barrier(4)
    froms: list[int] = []

    def open_one() -> None:
        start.wait()
        store = SqliteJobStore(path)
        froms.append(store.migrated_from)
        store.close()

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(froms) == [0] + [SQLITE_VERSION] * 3
    assert version(path) == SQLITE_VERSION and dump(path) == before


def test_migration_steps_are_numbered_in_order() -> None:
    check_sequence(SQLITE_MIGRATIONS)
    assert [m.version for m in SQLITE_MIGRATIONS] == list(range(1, SQLITE_VERSION + 1))
    with pytest.raises(AssertionError):
        check_sequence([Migration(1, "a", ()), Migration(3, "c", ())])
