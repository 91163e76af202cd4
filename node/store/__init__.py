"""The job store: the node's one state machine (instances, series, studies, jobs, outbox).

Import from here: the protocol (:class:`JobStore`), the records and states, and
:func:`open_store`. Engines live beside it (``sqlite.py``); nothing outside this package
imports an engine's driver or writes SQL.
"""

from node.store.factory import open_store
from node.store.migrations import StoreVersionError
from node.store.protocol import JobStore
from node.store.records import (
    MAX_ID,
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
from node.store.sqlite import SqliteJobStore, store_path

__all__ = [
    "MAX_ID",
    "InstanceRecord",
    "JobRow",
    "JobState",
    "JobStore",
    "NewJob",
    "NewOutboxItem",
    "NewStudyJob",
    "OutboxItem",
    "OutboxState",
    "Recorded",
    "RecoveredJobs",
    "SeriesRow",
    "SeriesState",
    "SqliteJobStore",
    "StoreVersionError",
    "StudyRow",
    "StudyState",
    "open_store",
    "store_path",
]
