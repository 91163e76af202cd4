"""What goes into and comes out of the job store: states and records, the same for every engine.

States are ``StrEnum``s: each member *is* its string (``JobState.DONE == "done"``), so JSON,
TOML, log lines and the API keep the strings they had. Records are frozen dataclasses; no
operation of the store takes or returns a bare tuple.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class SeriesState(StrEnum):
    RECEIVING = "receiving"
    COMPLETE = "complete"


StudyState = SeriesState  # a study goes through the same two states as its series


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
    state: SeriesState
    opened_at: float
    last_received: float  # also what complete_series checks nothing arrived since
    completed_at: float | None
    forced: bool
    generation: int
    instance_count: int


@dataclass(frozen=True)
class StudyRow:
    study_uid: str
    state: StudyState
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
    state: JobState
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    error: str | None
    timings: dict[str, float]
    result: dict[str, Any] | None


@dataclass(frozen=True)
class OutboxItem:
    id: int
    job_id: int | None
    destination: str
    path: str
    sop_instance_uid: str
    sop_class_uid: str
    state: OutboxState
    attempts: int
    next_attempt_at: float
    created_at: float
    sent_at: float | None
    last_error: str | None


@dataclass(frozen=True)
class NewJob:
    """A job to queue when a series completes: which route asked for which model."""

    route: str
    model: str


@dataclass(frozen=True)
class NewStudyJob:
    """A job to queue when a study completes, on one of its series."""

    series_uid: str
    route: str
    model: str


@dataclass(frozen=True)
class NewOutboxItem:
    """An object to send: where to, its file (relative to the data folder when under it), and
    its UIDs."""

    destination: str
    path: str
    sop_instance_uid: str
    sop_class_uid: str


@dataclass(frozen=True)
class RecoveredJobs:
    """What :meth:`JobStore.recover_jobs` did with the jobs a crash left running."""

    requeued: int
    failed: int


MAX_ID = 2**63 - 1  # job and outbox ids are signed 64-bit integers in every engine
