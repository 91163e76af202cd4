"""The job store: instances, series, studies and jobs in one SQLite database (WAL mode).

This is the node's one state machine on disk. Every transition is one transaction, so a restart
resumes from the states. Everything outside this module talks to the store through the methods
below, never SQL, so the store can later move onto another engine without touching the pipeline.

Durability: instance files are fsynced before they are recorded, and the database runs with
``synchronous=NORMAL`` (commits survive a killed process; after a power loss the last commits
may be gone, and :meth:`JobStore.reconcile` re-records instance files the database lost).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

SCHEMA = """
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


DB_NAME = "radnode.db"


def store_path(data_dir: str | Path) -> Path:
    """Where the node keeps its job store inside ``node.data_dir``."""
    return Path(data_dir) / DB_NAME


class SeriesState(StrEnum):
    RECEIVING = "receiving"
    COMPLETE = "complete"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class OutboxState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"  # gave up after the configured attempts; retried only by command


class Recorded(StrEnum):
    """What recording an instance did."""

    NEW = "new"
    DUPLICATE = "duplicate"
    REOPENED = "reopened"  # late instance; its series and study receive again
    LATE_IGNORED = "late_ignored"  # late instance; stored, but its series stays complete


@dataclass(frozen=True)
class InstanceRecord:
    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    study_uid: str
    modality: str
    path: str  # relative to the spool
    size: int
    transfer_syntax: str
    calling_ae: str = ""


@dataclass(frozen=True)
class SeriesRow:
    series_uid: str
    study_uid: str
    modality: str
    calling_ae: str
    state: str
    opened_at: float
    last_received: float
    completed_at: float | None
    forced: bool
    generation: int
    instance_count: int


@dataclass(frozen=True)
class StudyRow:
    study_uid: str
    state: str
    opened_at: float
    last_received: float
    completed_at: float | None
    forced: bool
    generation: int


@dataclass(frozen=True)
class JobRow:
    id: int
    series_uid: str
    study_uid: str
    model: str
    route: str
    generation: int
    state: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    error: str | None
    timings: dict[str, float]
    result: dict[str, Any] | None


class JobStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._conn.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction, serialised across the node's threads."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, tuple(args)).fetchall()

    # -- instances -------------------------------------------------------------------------

    def has_instance(self, sop_instance_uid: str) -> bool:
        rows = self._query(
            "SELECT 1 FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)
        )
        return bool(rows)

    def instance(self, sop_instance_uid: str) -> InstanceRecord | None:
        """The row of one instance (its modality is its series'), or None."""
        rows = self._query(
            "SELECT i.*, COALESCE(s.modality, '') AS modality FROM instances i"
            " LEFT JOIN series s ON s.series_uid = i.series_uid WHERE i.sop_instance_uid = ?",
            (sop_instance_uid,),
        )
        if not rows:
            return None
        r = rows[0]
        return InstanceRecord(
            sop_instance_uid=r["sop_instance_uid"], sop_class_uid=r["sop_class_uid"],
            series_uid=r["series_uid"], study_uid=r["study_uid"], modality=r["modality"],
            path=r["path"], size=r["size"], transfer_syntax=r["transfer_syntax"],
            calling_ae=r["calling_ae"],
        )

    def record_instance(
        self, inst: InstanceRecord, late_policy: str = "rerun", now: float | None = None
    ) -> Recorded:
        """Record a stored instance, opening or re-opening its series and study."""
        now = time.time() if now is None else now
        with self._tx() as db:
            inserted = db.execute(
                "INSERT OR IGNORE INTO instances (sop_instance_uid, sop_class_uid, series_uid,"
                " study_uid, path, size, transfer_syntax, calling_ae, received_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (inst.sop_instance_uid, inst.sop_class_uid, inst.series_uid, inst.study_uid,
                 inst.path, inst.size, inst.transfer_syntax, inst.calling_ae, now),
            ).rowcount
            if not inserted:
                return Recorded.DUPLICATE
            series = db.execute(
                "SELECT state FROM series WHERE series_uid = ?", (inst.series_uid,)
            ).fetchone()
            outcome = Recorded.NEW
            if series is None:
                db.execute(
                    "INSERT INTO series (series_uid, study_uid, modality, calling_ae, state,"
                    " opened_at, last_received, instance_count) VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
                    (inst.series_uid, inst.study_uid, inst.modality, inst.calling_ae,
                     SeriesState.RECEIVING, now, now),
                )
            elif series["state"] == SeriesState.RECEIVING:
                db.execute(
                    "UPDATE series SET last_received = ?, instance_count = instance_count + 1"
                    " WHERE series_uid = ?",
                    (now, inst.series_uid),
                )
            elif late_policy == "rerun":
                outcome = Recorded.REOPENED
                db.execute(
                    "UPDATE series SET state = ?, opened_at = ?, last_received = ?,"
                    " instance_count = instance_count + 1 WHERE series_uid = ?",
                    (SeriesState.RECEIVING, now, now, inst.series_uid),
                )
            else:
                outcome = Recorded.LATE_IGNORED
                db.execute(
                    "UPDATE series SET instance_count = instance_count + 1 WHERE series_uid = ?",
                    (inst.series_uid,),
                )
            study = db.execute(
                "SELECT state FROM studies WHERE study_uid = ?", (inst.study_uid,)
            ).fetchone()
            if study is None:
                db.execute(
                    "INSERT INTO studies (study_uid, state, opened_at, last_received)"
                    " VALUES (?, ?, ?, ?)",
                    (inst.study_uid, SeriesState.RECEIVING, now, now),
                )
            elif study["state"] == SeriesState.RECEIVING:
                db.execute(
                    "UPDATE studies SET last_received = ? WHERE study_uid = ?",
                    (now, inst.study_uid),
                )
            elif outcome != Recorded.LATE_IGNORED:
                db.execute(
                    "UPDATE studies SET state = ?, opened_at = ?, last_received = ?"
                    " WHERE study_uid = ?",
                    (SeriesState.RECEIVING, now, now, inst.study_uid),
                )
            return outcome

    def replace_instance_file(self, inst: InstanceRecord, now: float | None = None) -> bool:
        """Describe a new file of a recorded instance at the same path (its recorded file had
        been removed); its series and study are unchanged. False when no row has that path."""
        now = time.time() if now is None else now
        with self._tx() as db:
            return bool(db.execute(
                "UPDATE instances SET size = ?, transfer_syntax = ?, calling_ae = ?,"
                " received_at = ? WHERE sop_instance_uid = ? AND path = ?",
                (inst.size, inst.transfer_syntax, inst.calling_ae, now, inst.sop_instance_uid,
                 inst.path),
            ).rowcount)

    def instance_paths(self, series_uid: str) -> list[str]:
        """Spool-relative paths of a series' instances, in arrival order."""
        rows = self._query(
            "SELECT path FROM instances WHERE series_uid = ? ORDER BY rowid", (series_uid,)
        )
        return [r["path"] for r in rows]

    def known_paths(self) -> set[str]:
        return {r["path"] for r in self._query("SELECT path FROM instances")}

    def count_instances(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM instances")[0][0])

    # -- series and studies ----------------------------------------------------------------

    def series(self, series_uid: str) -> SeriesRow | None:
        rows = self._query("SELECT * FROM series WHERE series_uid = ?", (series_uid,))
        return _series(rows[0]) if rows else None

    def all_series(self, state: str | None = None) -> list[SeriesRow]:
        if state is None:
            rows = self._query("SELECT * FROM series ORDER BY opened_at")
        else:
            rows = self._query("SELECT * FROM series WHERE state = ? ORDER BY opened_at", (state,))
        return [_series(r) for r in rows]

    def study(self, study_uid: str) -> StudyRow | None:
        rows = self._query("SELECT * FROM studies WHERE study_uid = ?", (study_uid,))
        return _study(rows[0]) if rows else None

    def study_series(self, study_uid: str) -> list[SeriesRow]:
        rows = self._query(
            "SELECT * FROM series WHERE study_uid = ? ORDER BY opened_at", (study_uid,)
        )
        return [_series(r) for r in rows]

    def series_due(self, now: float, idle: float, max_wait: float) -> list[SeriesRow]:
        """Receiving series that have been idle long enough, or open too long."""
        rows = self._query(
            "SELECT * FROM series WHERE state = ? AND (last_received <= ? OR opened_at <= ?)"
            " ORDER BY opened_at",
            (SeriesState.RECEIVING, now - idle, now - max_wait),
        )
        return [_series(r) for r in rows]

    def studies_due(self, now: float, idle: float, max_wait: float) -> list[StudyRow]:
        """Receiving studies whose series are all complete and that are idle (or open too long).

        A study open longer than ``max_wait`` is due whatever its series are doing; the caller
        forces those series complete in the same step.
        """
        rows = self._query(
            "SELECT * FROM studies s WHERE state = ? AND (opened_at <= ? OR (last_received <= ?"
            " AND NOT EXISTS (SELECT 1 FROM series r WHERE r.study_uid = s.study_uid"
            " AND r.state = ?))) ORDER BY opened_at",
            (SeriesState.RECEIVING, now - max_wait, now - idle, SeriesState.RECEIVING),
        )
        return [_study(r) for r in rows]

    def complete_series(
        self,
        series: SeriesRow,
        forced: bool,
        jobs: list[tuple[str, str]],
        now: float | None = None,
    ) -> int | None:
        """Mark a series complete and queue its jobs (route, model) in one transaction.

        Returns the new generation, or None when an instance arrived since ``series`` was
        read (the series stays open and is looked at again later).
        """
        now = time.time() if now is None else now
        with self._tx() as db:
            if not self._mark_complete(db, "series", series.series_uid, series.last_received,
                                       forced, now):
                return None
            generation = series.generation + 1
            self._insert_jobs(db, [(series.series_uid, series.study_uid, r, m, generation)
                                   for r, m in jobs], now)
            return generation

    def complete_study(
        self,
        study: StudyRow,
        forced: bool,
        jobs: list[tuple[str, str, str]],
        now: float | None = None,
    ) -> bool:
        """Mark a study complete and queue jobs (series, route, model) at each series'
        current generation; jobs that already exist are not queued again."""
        now = time.time() if now is None else now
        with self._tx() as db:
            if not self._mark_complete(db, "studies", study.study_uid, study.last_received,
                                       forced, now):
                return False
            rows = []
            for series_uid, route, model in jobs:
                gen = db.execute(
                    "SELECT generation FROM series WHERE series_uid = ?", (series_uid,)
                ).fetchone()
                if gen is not None:
                    rows.append((series_uid, study.study_uid, route, model, gen[0]))
            self._insert_jobs(db, rows, now)
            return True

    @staticmethod
    def _mark_complete(db: sqlite3.Connection, table: str, uid: str, last_received: float,
                       forced: bool, now: float) -> bool:
        """Close a receiving series or study (``table``) and bump its generation, unless an
        instance arrived since ``last_received`` was read."""
        key = {"series": "series_uid", "studies": "study_uid"}[table]
        return bool(db.execute(
            f"UPDATE {table} SET state = ?, completed_at = ?, forced = ?,"
            " generation = generation + 1"
            f" WHERE {key} = ? AND state = ? AND last_received = ?",
            (SeriesState.COMPLETE, now, int(forced), uid, SeriesState.RECEIVING, last_received),
        ).rowcount)

    @staticmethod
    def _insert_jobs(
        db: sqlite3.Connection, rows: list[tuple[str, str, str, str, int]], now: float
    ) -> None:
        db.executemany(
            "INSERT OR IGNORE INTO jobs (series_uid, study_uid, route, model, generation, state,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(*row, JobState.QUEUED, now) for row in rows],
        )

    # -- jobs ------------------------------------------------------------------------------

    def jobs(
        self, state: str | None = None, series_uid: str | None = None, limit: int = 1000
    ) -> list[JobRow]:
        where, args = [], []
        if state is not None:
            where.append("state = ?")
            args.append(state)
        if series_uid is not None:
            where.append("series_uid = ?")
            args.append(series_uid)
        sql = "SELECT * FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        return [_job(r) for r in self._query(sql, (*args, limit))]

    def job(self, job_id: int) -> JobRow | None:
        rows = self._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def count_jobs(self) -> dict[str, int]:
        rows = self._query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        return {r["state"]: r["n"] for r in rows}

    def claim_job(self, now: float | None = None) -> JobRow | None:
        """Take the oldest queued job and mark it running (one worker gets each job)."""
        now = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute(
                "UPDATE jobs SET state = ?, started_at = ?, finished_at = NULL, error = NULL,"
                " attempts = attempts + 1 WHERE id = (SELECT id FROM jobs WHERE state = ?"
                " ORDER BY id LIMIT 1) RETURNING *",
                (JobState.RUNNING, now, JobState.QUEUED),
            ).fetchone()
        return _job(row) if row is not None else None

    def finish_job(
        self,
        job_id: int,
        state: JobState,
        *,
        error: str | None = None,
        timings: dict[str, float] | None = None,
        result: dict[str, Any] | None = None,
        outbox: list[tuple[str, str, str, str]] | None = None,
        now: float | None = None,
    ) -> None:
        """End a running job; queue its result objects (destination, path, SOP instance,
        SOP class) for sending in the same transaction."""
        now = time.time() if now is None else now
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, error = ?, timings = ?, result = ?"
                " WHERE id = ?",
                (state, now, error, json.dumps(timings or {}),
                 json.dumps(result) if result is not None else None, job_id),
            )
            self._enqueue(db, job_id, outbox or [], now)

    def recover_jobs(self, max_attempts: int) -> tuple[int, int]:
        """Jobs left running by a crash: queue them again, or fail those tried too often.
        Returns (re-queued, failed)."""
        with self._tx() as db:
            failed = db.execute(
                "UPDATE jobs SET state = ?, error = ?, finished_at = ? WHERE state = ?"
                " AND attempts >= ?",
                (JobState.FAILED, f"interrupted {max_attempts} times (crash or kill)",
                 time.time(), JobState.RUNNING, max_attempts),
            ).rowcount
            requeued = db.execute(
                "UPDATE jobs SET state = ?, started_at = NULL WHERE state = ?",
                (JobState.QUEUED, JobState.RUNNING),
            ).rowcount
        return requeued, failed

    def requeue_job(self, job_id: int) -> bool:
        """Give a running job back to the queue without counting the attempt (the node stopped
        it at shutdown; the job did nothing wrong). False when it is not running."""
        with self._tx() as db:
            return bool(db.execute(
                "UPDATE jobs SET state = ?, started_at = NULL, attempts = MAX(attempts - 1, 0)"
                " WHERE id = ? AND state = ?",
                (JobState.QUEUED, job_id, JobState.RUNNING),
            ).rowcount)

    def retry_job(self, job_id: int) -> bool:
        """Queue a failed or cancelled job again (a fresh set of attempts)."""
        with self._tx() as db:
            return bool(db.execute(
                "UPDATE jobs SET state = ?, attempts = 0, error = NULL WHERE id = ?"
                " AND state IN (?, ?)",
                (JobState.QUEUED, job_id, JobState.FAILED, JobState.CANCELLED),
            ).rowcount)

    def cancel_job(self, job_id: int) -> bool:
        with self._tx() as db:
            return bool(db.execute(
                "UPDATE jobs SET state = ?, finished_at = ? WHERE id = ? AND state = ?",
                (JobState.CANCELLED, time.time(), job_id, JobState.QUEUED),
            ).rowcount)

    # -- outbox ----------------------------------------------------------------------------

    @staticmethod
    def _enqueue(db: sqlite3.Connection, job_id: int | None,
                 items: list[tuple[str, str, str, str]], now: float) -> None:
        db.executemany(
            "INSERT INTO outbox (job_id, destination, path, sop_instance_uid, sop_class_uid,"
            " state, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(destination, sop_instance_uid) DO UPDATE SET path = excluded.path,"
            " state = CASE WHEN outbox.state = 'sent' THEN outbox.state ELSE 'pending' END",
            [(job_id, dest, path, sop, cls, OutboxState.PENDING, now, now)
             for dest, path, sop, cls in items],
        )

    def enqueue(self, items: list[tuple[str, str, str, str]], job_id: int | None = None,
                now: float | None = None) -> None:
        """Queue objects (destination, path, SOP instance, SOP class) for sending.
        An object already sent to a destination is not sent again."""
        with self._tx() as db:
            self._enqueue(db, job_id, items, time.time() if now is None else now)

    def outbox_due(self, now: float | None = None, limit: int = 100) -> list[OutboxItem]:
        now = time.time() if now is None else now
        rows = self._query(
            "SELECT * FROM outbox WHERE state = ? AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at, id LIMIT ?",
            (OutboxState.PENDING, now, limit),
        )
        return [_outbox(r) for r in rows]

    def outbox_items(self, state: str | None = None, limit: int = 1000) -> list[OutboxItem]:
        if state is None:
            rows = self._query("SELECT * FROM outbox ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._query("SELECT * FROM outbox WHERE state = ? ORDER BY id DESC LIMIT ?",
                               (state, limit))
        return [_outbox(r) for r in rows]

    def mark_sent(self, item_id: int, now: float | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET state = ?, sent_at = ?, attempts = attempts + 1,"
                " last_error = NULL WHERE id = ?",
                (OutboxState.SENT, time.time() if now is None else now, item_id),
            )

    def mark_failed(self, item_id: int, error: str, next_attempt_at: float, dead: bool) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET state = ?, attempts = attempts + 1, last_error = ?,"
                " next_attempt_at = ? WHERE id = ?",
                (OutboxState.DEAD if dead else OutboxState.PENDING, error, next_attempt_at,
                 item_id),
            )

    def postpone_destination(self, destination: str, until: float, error: str) -> int:
        """Hold every pending item of a destination that refuses associations, without
        counting an attempt against each; returns how many were held."""
        with self._tx() as db:
            return db.execute(
                "UPDATE outbox SET next_attempt_at = MAX(next_attempt_at, ?), last_error = ?"
                " WHERE destination = ? AND state = ?",
                (until, error, destination, OutboxState.PENDING),
            ).rowcount

    def retry_dead(self, item_id: int | None = None, now: float | None = None) -> int:
        """Send dead letters again (one, or all); returns how many."""
        now = time.time() if now is None else now
        with self._tx() as db:
            if item_id is None:
                cur = db.execute(
                    "UPDATE outbox SET state = ?, attempts = 0, next_attempt_at = ?"
                    " WHERE state = ?", (OutboxState.PENDING, now, OutboxState.DEAD))
            else:
                cur = db.execute(
                    "UPDATE outbox SET state = ?, attempts = 0, next_attempt_at = ?"
                    " WHERE state = ? AND id = ?",
                    (OutboxState.PENDING, now, OutboxState.DEAD, item_id))
            return cur.rowcount

    def count_outbox(self) -> dict[str, int]:
        rows = self._query("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state")
        return {r["state"]: r["n"] for r in rows}


@dataclass(frozen=True)
class OutboxItem:
    id: int
    job_id: int | None
    destination: str
    path: str
    sop_instance_uid: str
    sop_class_uid: str
    state: str
    attempts: int
    next_attempt_at: float
    created_at: float
    sent_at: float | None
    last_error: str | None


def _series(r: sqlite3.Row) -> SeriesRow:
    return SeriesRow(
        series_uid=r["series_uid"], study_uid=r["study_uid"], modality=r["modality"],
        calling_ae=r["calling_ae"], state=r["state"], opened_at=r["opened_at"],
        last_received=r["last_received"], completed_at=r["completed_at"],
        forced=bool(r["forced"]), generation=r["generation"], instance_count=r["instance_count"],
    )


def _study(r: sqlite3.Row) -> StudyRow:
    return StudyRow(
        study_uid=r["study_uid"], state=r["state"], opened_at=r["opened_at"],
        last_received=r["last_received"], completed_at=r["completed_at"],
        forced=bool(r["forced"]), generation=r["generation"],
    )


def _job(r: sqlite3.Row) -> JobRow:
    return JobRow(
        id=r["id"], series_uid=r["series_uid"], study_uid=r["study_uid"], model=r["model"],
        route=r["route"], generation=r["generation"], state=r["state"],
        created_at=r["created_at"], started_at=r["started_at"], finished_at=r["finished_at"],
        attempts=r["attempts"], error=r["error"],
        timings=json.loads(r["timings"]) if r["timings"] else {},
        result=json.loads(r["result"]) if r["result"] else None,
    )


def _outbox(r: sqlite3.Row) -> OutboxItem:
    return OutboxItem(**{k: r[k] for k in r.keys()})  # noqa: SIM118 (sqlite3.Row)
