"""The SQLite engine of the job store: one database file in WAL mode (the default engine).

Every operation of :class:`node.store.protocol.JobStore` is one transaction (``BEGIN
IMMEDIATE``), serialised across the threads of a process by a lock and across processes by
SQLite's write lock, so a queued job is claimed by one caller only.

Durability: instance files are fsynced before they are recorded, and the database runs with
``synchronous=NORMAL`` (commits survive a killed process; after a power loss the last commits
may be gone, and start-up recovery re-records instance files the database lost).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from node.store.migrations import SQLITE_MIGRATIONS, Migration, pending
from node.store.records import (
    InstanceRecord,
    JobRow,
    JobState,
    NewJob,
    NewOutboxItem,
    NewStudyJob,
    OutboxItem,
    OutboxState,
    Recorded,
    RecoveredJobs,
    SeriesRow,
    SeriesState,
    StudyRow,
    StudyState,
)

DB_NAME = "radnode.db"


def store_path(data_dir: str | Path) -> Path:
    """Where the node keeps its SQLite job store inside ``node.data_dir``."""
    return Path(data_dir) / DB_NAME


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = SQLITE_MIGRATIONS) -> int:
    """Bring the database to the latest schema version, in one transaction; returns the
    version it had. Several processes may open an old store at once: the first migrates, the
    others then find nothing to do."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        before = schema_version(conn)
        for step in pending(before, migrations):
            for statement in step.statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {int(step.version)}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return before


class SqliteJobStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            with self._lock:
                self.migrated_from = migrate(self._conn)
        except BaseException:
            self._conn.close()
            raise

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
                    (inst.study_uid, StudyState.RECEIVING, now, now),
                )
            elif study["state"] == StudyState.RECEIVING:
                db.execute(
                    "UPDATE studies SET last_received = ? WHERE study_uid = ?",
                    (now, inst.study_uid),
                )
            elif outcome != Recorded.LATE_IGNORED:
                db.execute(
                    "UPDATE studies SET state = ?, opened_at = ?, last_received = ?"
                    " WHERE study_uid = ?",
                    (StudyState.RECEIVING, now, now, inst.study_uid),
                )
            return outcome

    def replace_instance_file(self, inst: InstanceRecord, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._tx() as db:
            return bool(db.execute(
                "UPDATE instances SET size = ?, transfer_syntax = ?, calling_ae = ?,"
                " received_at = ? WHERE sop_instance_uid = ? AND path = ?",
                (inst.size, inst.transfer_syntax, inst.calling_ae, now, inst.sop_instance_uid,
                 inst.path),
            ).rowcount)

    def instance_paths(self, series_uid: str) -> list[str]:
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

    def all_series(self, state: SeriesState | None = None) -> list[SeriesRow]:
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
        rows = self._query(
            "SELECT * FROM series WHERE state = ? AND (last_received <= ? OR opened_at <= ?)"
            " ORDER BY opened_at",
            (SeriesState.RECEIVING, now - idle, now - max_wait),
        )
        return [_series(r) for r in rows]

    def studies_due(self, now: float, idle: float, max_wait: float) -> list[StudyRow]:
        rows = self._query(
            "SELECT * FROM studies s WHERE state = ? AND (opened_at <= ? OR (last_received <= ?"
            " AND NOT EXISTS (SELECT 1 FROM series r WHERE r.study_uid = s.study_uid"
            " AND r.state = ?))) ORDER BY opened_at",
            (StudyState.RECEIVING, now - max_wait, now - idle, SeriesState.RECEIVING),
        )
        return [_study(r) for r in rows]

    def complete_series(
        self, series: SeriesRow, forced: bool, jobs: Sequence[NewJob], now: float | None = None
    ) -> int | None:
        now = time.time() if now is None else now
        with self._tx() as db:
            if not _mark_complete(db, "series", series.series_uid, series.last_received,
                                  forced, now):
                return None
            generation = series.generation + 1
            _insert_jobs(db, [(series.series_uid, series.study_uid, j.route, j.model, generation)
                              for j in jobs], now)
            return generation

    def complete_study(
        self, study: StudyRow, forced: bool, jobs: Sequence[NewStudyJob],
        now: float | None = None,
    ) -> bool:
        now = time.time() if now is None else now
        with self._tx() as db:
            if not _mark_complete(db, "studies", study.study_uid, study.last_received,
                                  forced, now):
                return False
            rows = []
            for job in jobs:
                gen = db.execute(
                    "SELECT generation FROM series WHERE series_uid = ?", (job.series_uid,)
                ).fetchone()
                if gen is not None:
                    rows.append((job.series_uid, study.study_uid, job.route, job.model, gen[0]))
            _insert_jobs(db, rows, now)
            return True

    # -- jobs ------------------------------------------------------------------------------

    def jobs(
        self, state: JobState | None = None, series_uid: str | None = None, limit: int = 1000
    ) -> list[JobRow]:
        where: list[str] = []
        args: list[Any] = []
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
        return {JobState(r["state"]): r["n"] for r in rows}

    def claim_job(self, now: float | None = None) -> JobRow | None:
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
        outbox: Sequence[NewOutboxItem] | None = None,
        now: float | None = None,
    ) -> None:
        now = time.time() if now is None else now
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, error = ?, timings = ?, result = ?"
                " WHERE id = ?",
                (state, now, error, json.dumps(timings or {}),
                 json.dumps(result) if result is not None else None, job_id),
            )
            _enqueue(db, job_id, outbox or [], now)

    def recover_jobs(self, max_attempts: int, now: float | None = None) -> RecoveredJobs:
        now = time.time() if now is None else now
        with self._tx() as db:
            failed = db.execute(
                "UPDATE jobs SET state = ?, error = ?, finished_at = ? WHERE state = ?"
                " AND attempts >= ?",
                (JobState.FAILED, f"interrupted {max_attempts} times (crash or kill)",
                 now, JobState.RUNNING, max_attempts),
            ).rowcount
            requeued = db.execute(
                "UPDATE jobs SET state = ?, started_at = NULL WHERE state = ?",
                (JobState.QUEUED, JobState.RUNNING),
            ).rowcount
        return RecoveredJobs(requeued=requeued, failed=failed)

    def requeue_job(self, job_id: int) -> bool:
        with self._tx() as db:
            return bool(db.execute(
                "UPDATE jobs SET state = ?, started_at = NULL, attempts = MAX(attempts - 1, 0)"
                " WHERE id = ? AND state = ?",
                (JobState.QUEUED, job_id, JobState.RUNNING),
            ).rowcount)

    def retry_job(self, job_id: int) -> bool:
        with self._tx() as db:
            return bool(db.execute(
                "UPDATE jobs SET state = ?, attempts = 0, error = NULL WHERE id = ?"
                " AND state IN (?, ?)",
                (JobState.QUEUED, job_id, JobState.FAILED, JobState.CANCELLED),
            ).rowcount)

    def cancel_job(self, job_id: int, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._tx() as db:
            return bool(db.execute(
                "UPDATE jobs SET state = ?, finished_at = ? WHERE id = ? AND state = ?",
                (JobState.CANCELLED, now, job_id, JobState.QUEUED),
            ).rowcount)

    # -- outbox ----------------------------------------------------------------------------

    def enqueue(
        self, items: Sequence[NewOutboxItem], job_id: int | None = None,
        now: float | None = None,
    ) -> None:
        with self._tx() as db:
            _enqueue(db, job_id, items, time.time() if now is None else now)

    def outbox_due(self, now: float | None = None, limit: int = 100) -> list[OutboxItem]:
        now = time.time() if now is None else now
        rows = self._query(
            "SELECT * FROM outbox WHERE state = ? AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at, id LIMIT ?",
            (OutboxState.PENDING, now, limit),
        )
        return [_outbox(r) for r in rows]

    def outbox_items(
        self, state: OutboxState | None = None, limit: int = 1000
    ) -> list[OutboxItem]:
        if state is None:
            rows = self._query("SELECT * FROM outbox ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._query("SELECT * FROM outbox WHERE state = ? ORDER BY id DESC LIMIT ?",
                               (state, limit))
        return [_outbox(r) for r in rows]

    def outbox_item(self, item_id: int) -> OutboxItem | None:
        rows = self._query("SELECT * FROM outbox WHERE id = ?", (item_id,))
        return _outbox(rows[0]) if rows else None

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
        with self._tx() as db:
            return db.execute(
                "UPDATE outbox SET next_attempt_at = MAX(next_attempt_at, ?), last_error = ?"
                " WHERE destination = ? AND state = ?",
                (until, error, destination, OutboxState.PENDING),
            ).rowcount

    def retry_dead(self, item_id: int | None = None, now: float | None = None) -> int:
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
        return {OutboxState(r["state"]): r["n"] for r in rows}


# -- helpers inside one transaction ------------------------------------------------------------

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


def _insert_jobs(
    db: sqlite3.Connection, rows: list[tuple[str, str, str, str, int]], now: float
) -> None:
    """(series, study, route, model, generation) rows; existing jobs are kept as they are."""
    db.executemany(
        "INSERT OR IGNORE INTO jobs (series_uid, study_uid, route, model, generation, state,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(*row, JobState.QUEUED, now) for row in rows],
    )


def _enqueue(db: sqlite3.Connection, job_id: int | None, items: Sequence[NewOutboxItem],
             now: float) -> None:
    db.executemany(
        "INSERT INTO outbox (job_id, destination, path, sop_instance_uid, sop_class_uid,"
        " state, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(destination, sop_instance_uid) DO UPDATE SET path = excluded.path,"
        " state = CASE WHEN outbox.state = ? THEN outbox.state ELSE ? END",
        [(job_id, i.destination, i.path, i.sop_instance_uid, i.sop_class_uid,
          OutboxState.PENDING, now, now, OutboxState.SENT, OutboxState.PENDING)
         for i in items],
    )


# -- rows to records ---------------------------------------------------------------------------

def _series(r: sqlite3.Row) -> SeriesRow:
    return SeriesRow(
        series_uid=r["series_uid"], study_uid=r["study_uid"], modality=r["modality"],
        calling_ae=r["calling_ae"], state=SeriesState(r["state"]), opened_at=r["opened_at"],
        last_received=r["last_received"], completed_at=r["completed_at"],
        forced=bool(r["forced"]), generation=r["generation"], instance_count=r["instance_count"],
    )


def _study(r: sqlite3.Row) -> StudyRow:
    return StudyRow(
        study_uid=r["study_uid"], state=StudyState(r["state"]), opened_at=r["opened_at"],
        last_received=r["last_received"], completed_at=r["completed_at"],
        forced=bool(r["forced"]), generation=r["generation"],
    )


def _job(r: sqlite3.Row) -> JobRow:
    return JobRow(
        id=r["id"], series_uid=r["series_uid"], study_uid=r["study_uid"], model=r["model"],
        route=r["route"], generation=r["generation"], state=JobState(r["state"]),
        created_at=r["created_at"], started_at=r["started_at"], finished_at=r["finished_at"],
        attempts=r["attempts"], error=r["error"],
        timings=json.loads(r["timings"]) if r["timings"] else {},
        result=json.loads(r["result"]) if r["result"] else None,
    )


def _outbox(r: sqlite3.Row) -> OutboxItem:
    return OutboxItem(
        id=r["id"], job_id=r["job_id"], destination=r["destination"], path=r["path"],
        sop_instance_uid=r["sop_instance_uid"], sop_class_uid=r["sop_class_uid"],
        state=OutboxState(r["state"]), attempts=r["attempts"],
        next_attempt_at=r["next_attempt_at"], created_at=r["created_at"], sent_at=r["sent_at"],
        last_error=r["last_error"],
    )
