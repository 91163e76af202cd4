"""The job store protocol: every operation the rest of the node asks of the job store.

The node's one state machine (instances, series, studies, jobs, outbox items) lives behind this
protocol. Each method is one transaction: it happens entirely or not at all, and it is safe to
call from several threads of one process and from several processes sharing the store (a job
is claimed by one caller only). Nothing outside ``node/store/`` knows which engine is behind it.

An engine implements every method here and passes ``tests/store/test_protocol.py``.
Times are seconds since the epoch (``time.time()``); ``now=None`` means the engine's clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

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
)


@runtime_checkable
class JobStore(Protocol):
    def close(self) -> None:
        """Release the store's connections; the store is not used afterwards."""

    # -- instances -------------------------------------------------------------------------

    def has_instance(self, sop_instance_uid: str) -> bool:
        """Whether an instance with this SOP Instance UID is recorded."""

    def instance(self, sop_instance_uid: str) -> InstanceRecord | None:
        """The record of one instance (its modality is its series'), or None."""

    def record_instance(
        self, inst: InstanceRecord, late_policy: str = "rerun", now: float | None = None
    ) -> Recorded:
        """Record a stored instance, opening its series and study (or updating them).

        A SOP Instance UID already recorded changes nothing (DUPLICATE). An instance of a
        complete series re-opens the series and its study with ``late_policy`` "rerun"
        (REOPENED); with any other policy it is counted but the series stays complete
        (LATE_IGNORED).
        """

    def replace_instance_file(self, inst: InstanceRecord, now: float | None = None) -> bool:
        """Describe a new file of a recorded instance at the same path (size, transfer syntax,
        calling AE); its series and study are unchanged. False when no row has that UID and
        path."""

    def instance_paths(self, series_uid: str) -> list[str]:
        """Spool-relative paths of a series' instances, in arrival order."""

    def known_paths(self) -> set[str]:
        """The path of every recorded instance."""

    def count_instances(self) -> int:
        """How many instances are recorded."""

    # -- series and studies ----------------------------------------------------------------

    def series(self, series_uid: str) -> SeriesRow | None:
        """One series, or None."""

    def all_series(self, state: SeriesState | None = None) -> list[SeriesRow]:
        """Every series (or those in ``state``), oldest opened first."""

    def study(self, study_uid: str) -> StudyRow | None:
        """One study, or None."""

    def study_series(self, study_uid: str) -> list[SeriesRow]:
        """The series of a study, oldest opened first."""

    def series_due(self, now: float, idle: float, max_wait: float) -> list[SeriesRow]:
        """Receiving series idle for ``idle`` seconds, or open for ``max_wait``; oldest
        first."""

    def studies_due(self, now: float, idle: float, max_wait: float) -> list[StudyRow]:
        """Receiving studies whose series are all complete and that are idle for ``idle``
        seconds, and every receiving study open for ``max_wait``; oldest first."""

    def complete_series(
        self, series: SeriesRow, forced: bool, jobs: Sequence[NewJob], now: float | None = None
    ) -> int | None:
        """Mark a receiving series complete, bump its generation and queue ``jobs`` at that
        generation, in one transaction. Returns the new generation, or None (nothing changed)
        when an instance arrived since ``series`` was read or the series is not receiving.
        A job that exists already (series, model, generation) is not queued again."""

    def complete_study(
        self, study: StudyRow, forced: bool, jobs: Sequence[NewStudyJob],
        now: float | None = None,
    ) -> bool:
        """Mark a receiving study complete and queue ``jobs``, each at its series' current
        generation, in one transaction; jobs that exist already, or of unknown series, are not
        queued. False (nothing changed) when an instance arrived since ``study`` was read."""

    # -- jobs ------------------------------------------------------------------------------

    def jobs(
        self, state: JobState | None = None, series_uid: str | None = None, limit: int = 1000
    ) -> list[JobRow]:
        """Jobs, newest first, filtered by state and series."""

    def job(self, job_id: int) -> JobRow | None:
        """One job, or None."""

    def count_jobs(self) -> dict[str, int]:
        """How many jobs are in each state (keys are JobState members; absent means 0)."""

    def claim_job(self, now: float | None = None) -> JobRow | None:
        """Take the oldest queued job: it becomes running, started now, with one more attempt
        and no error. Each queued job goes to exactly one caller, across threads and
        processes. None when nothing is queued."""

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
        """End a job in ``state`` with its error, timings and result summary, and queue its
        result objects for sending (as :meth:`enqueue`), in one transaction."""

    def recover_jobs(self, max_attempts: int, now: float | None = None) -> RecoveredJobs:
        """Jobs left running by a crash: those with ``max_attempts`` attempts fail, the others
        are queued again."""

    def requeue_job(self, job_id: int) -> bool:
        """Give a running job back to the queue without counting the attempt (the node stopped
        it at shutdown). False when it is not running."""

    def retry_job(self, job_id: int) -> bool:
        """Queue a failed or cancelled job again, with a fresh set of attempts and no error.
        False when it is in another state (or unknown)."""

    def cancel_job(self, job_id: int, now: float | None = None) -> bool:
        """Cancel a queued job. False when it is not queued (or unknown)."""

    # -- outbox ----------------------------------------------------------------------------

    def enqueue(
        self, items: Sequence[NewOutboxItem], job_id: int | None = None,
        now: float | None = None,
    ) -> None:
        """Queue objects for sending, due now. One item per (destination, SOP instance): an
        item queued again takes the new path and becomes pending, unless it was sent (an
        object sent to a destination is not sent again)."""

    def outbox_due(self, now: float | None = None, limit: int = 100) -> list[OutboxItem]:
        """Pending items whose next attempt is due, earliest due first."""

    def outbox_items(
        self, state: OutboxState | None = None, limit: int = 1000
    ) -> list[OutboxItem]:
        """Outbox items, newest first, filtered by state."""

    def outbox_item(self, item_id: int) -> OutboxItem | None:
        """One outbox item, or None."""

    def mark_sent(self, item_id: int, now: float | None = None) -> None:
        """The item was sent: counts the attempt, clears the last error."""

    def mark_failed(self, item_id: int, error: str, next_attempt_at: float, dead: bool) -> None:
        """An attempt failed: counts it, keeps ``error``; the item is tried again at
        ``next_attempt_at``, or is dead (a dead letter)."""

    def postpone_destination(self, destination: str, until: float, error: str) -> int:
        """Hold every pending item of a destination until ``until`` (never earlier than it
        was due) without counting an attempt; returns how many."""

    def retry_dead(self, item_id: int | None = None, now: float | None = None) -> int:
        """Dead letters (one, or all) become pending, due now, with no attempts; returns how
        many."""

    def count_outbox(self) -> dict[str, int]:
        """How many outbox items are in each state (keys are OutboxState members)."""
