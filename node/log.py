"""Logging set-up. Log lines carry UIDs, AE titles and addresses, never patient data.

Two formats: ``text`` (for people) and ``json`` (one object per line, for log collectors). A
worker binds the job it runs with :func:`job_context`; every line logged inside (by any module)
then carries ``job_id`` and ``series_uid``, so one job's lines can be found among the others.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

_JOB: contextvars.ContextVar[tuple[int, str] | None] = contextvars.ContextVar(
    "radnode_job", default=None
)


@contextmanager
def job_context(job_id: int, series_uid: str) -> Iterator[None]:
    """Tag every log line of this thread (or task) with the job it is about."""
    token = _JOB.set((job_id, series_uid))
    try:
        yield
    finally:
        _JOB.reset(token)


class JobFilter(logging.Filter):
    """Adds ``job_id`` and ``series_uid`` (None outside a job) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = _JOB.get()
        if not hasattr(record, "job_id"):
            record.job_id = job[0] if job else None
        if not hasattr(record, "series_uid"):
            record.series_uid = job[1] if job else None
        return True


class TextFormatter(logging.Formatter):
    """``2025-01-01T12:00:00 INFO    radnode.worker: message [job 3 series 1.2.3]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                         "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        job_id = getattr(record, "job_id", None)
        if job_id is None:
            return line
        head, sep, tail = line.partition("\n")  # the tag goes on the first line, not the trace
        return f"{head} [job {job_id} series {getattr(record, 'series_uid', '')}]{sep}{tail}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, job_id, series_uid[, exc]."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "thread": record.threadName,
        }
        job_id = getattr(record, "job_id", None)
        if job_id is not None:
            out["job_id"] = job_id
            out["series_uid"] = getattr(record, "series_uid", None)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(JobFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pynetdicom's DEBUG output can dump dataset elements: never below INFO. Its INFO lines (two
    # per C-STORE) only when the node itself logs at DEBUG: the node logs associations and
    # refusals itself.
    numeric = logging.getLevelName(level)
    pynetdicom_level = logging.INFO if numeric <= logging.DEBUG else max(numeric, logging.WARNING)
    logging.getLogger("pynetdicom").setLevel(pynetdicom_level)
