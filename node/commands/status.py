"""``radnode status``, ``radnode jobs ...`` and ``radnode outbox ...``: the job store, read by a
person. They open the store beside a running node (SQLite WAL allows it)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from node.store import JobRow, JobState, JobStore, OutboxItem, OutboxState, store_path
from node.store import open_store as _open


def open_store(data_dir: Path) -> JobStore:
    """The store of a node that has run (FileNotFoundError otherwise: a reader never makes an
    empty one)."""
    return _open(store_path(data_dir), create=False)


def _ago(ts: float | None) -> str:
    if ts is None:
        return "-"
    seconds = max(0.0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _counts(counts: dict[str, int], order: tuple[str, ...]) -> str:
    return ", ".join(f"{name} {counts.get(name, 0)}" for name in order)


def job_line(job: JobRow) -> str:
    total = f"{sum(job.timings.values()):.1f}s" if job.timings else "-"
    error = f"  {job.error}" if job.error else ""
    return (f"{job.id:>6}  {job.state:<9} {job.model:<16} {total:>7}  "
            f"{_ago(job.finished_at or job.started_at or job.created_at):>9}  "
            f"series {job.series_uid}{error}")


def outbox_line(item: OutboxItem) -> str:
    error = f"  {item.last_error}" if item.last_error else ""
    return (f"{item.id:>6}  {item.state:<8} {item.destination:<12} tries {item.attempts:<3} "
            f"{item.sop_instance_uid}{error}")


def status_report(store: JobStore, recent: int = 10) -> str:
    series = store.all_series()
    receiving = sum(1 for s in series if s.state == "receiving")
    lines = [
        f"instances: {store.count_instances()}",
        f"series:    receiving {receiving}, complete {len(series) - receiving}",
        "jobs:      " + _counts(store.count_jobs(),
                                ("queued", "running", "done", "failed", "cancelled")),
        "outbox:    " + _counts(store.count_outbox(), ("pending", "sent", "dead")),
        "",
        f"recent jobs (newest first, {recent} at most):",
    ]
    lines += ["  " + job_line(j) for j in store.jobs(limit=recent)] or ["  none"]
    failed = store.jobs(state=JobState.FAILED, limit=recent)
    dead = store.outbox_items(state=OutboxState.DEAD, limit=recent)
    lines += ["", "failures:"]
    lines += ["  job " + job_line(j).strip() for j in failed]
    lines += ["  dead letter " + outbox_line(i).strip() for i in dead]
    if not failed and not dead:
        lines.append("  none")
    else:
        lines.append("  (retry: radnode jobs retry ID, radnode outbox retry ID | --all)")
    return "\n".join(lines)


def job_details(job: JobRow) -> str:
    return json.dumps({
        "id": job.id, "state": job.state, "model": job.model, "route": job.route,
        "series_uid": job.series_uid, "study_uid": job.study_uid,
        "generation": job.generation, "attempts": job.attempts, "error": job.error,
        "created_at": job.created_at, "started_at": job.started_at,
        "finished_at": job.finished_at, "timings": job.timings, "result": job.result,
    }, indent=2)
