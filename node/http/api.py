"""What the HTTP interface says: jobs, models, queues, outbox and readiness as JSON-ready dicts.

Everything is read from the job store and the service's parts at request time; nothing here
writes except the retry/cancel actions, which go through the store's own transitions.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.errors import NodeError
from node.http.preview import COUNT as PREVIEW_COUNT
from node.http.preview import has_previews
from node.inference.manifest import ModelPackage
from node.store import JobRow, JobState, JobStore, OutboxItem, OutboxState

if TYPE_CHECKING:
    from node.inference.runtime import SessionRegistry

JOB_STATES = tuple(s.value for s in JobState)
OUTBOX_STATES = tuple(s.value for s in OutboxState)
FINISHED = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


class ApiError(NodeError):
    """A request the API refuses; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Node:
    """The parts of a running node the HTTP interface reads (the Service provides them)."""

    store: JobStore
    spool_root: Path
    packages: Mapping[str, ModelPackage]
    registry: SessionRegistry
    listener_port: Any  # () -> int | None: the DICOM port when listening
    free_bytes: Any  # () -> int: free space of the spool
    wake_workers: Any  # () -> None
    wake_sender: Any  # () -> None
    # (job_id) -> bool: cancels a queued job, or stops a running one (the workers' cancel)
    cancel_job: Any
    ae_title: str = ""
    started_at: float = 0.0


def job_json(job: JobRow) -> dict[str, Any]:
    """One job: state, model, timings per stage, outcome, error reason and result summary."""
    result = job.result or {}
    previews = ([f"/api/jobs/{job.id}/preview/{n}.png" for n in range(PREVIEW_COUNT)]
                if has_previews(job) else [])
    return {
        "id": job.id,
        "state": job.state,
        "outcome": job.state if job.state in FINISHED else None,
        "model": job.model,
        "model_version": result.get("version"),
        "provider": result.get("provider"),
        "route": job.route,
        "series_uid": job.series_uid,
        "study_uid": job.study_uid,
        "generation": job.generation,
        "attempts": job.attempts,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "timings": job.timings,
        "total_seconds": round(sum(job.timings.values()), 4) if job.timings else None,
        "error": job.error,
        "result": job.result,
        "previews": previews,
    }


def job_brief(job: JobRow) -> dict[str, Any]:
    """A job in a list: the same, without the result's measurements."""
    out = job_json(job)
    result = out.pop("result") or {}
    out["regions"] = sorted(result.get("regions") or {})
    return out


def parse_limit(query: Mapping[str, list[str]], default: int = 50, most: int = 1000) -> int:
    raw = query.get("limit", [str(default)])[-1]
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(400, f"limit must be an integer (got {raw!r})") from None
    if not 1 <= limit <= most:
        raise ApiError(400, f"limit must be between 1 and {most} (got {limit})")
    return limit


def parse_state(query: Mapping[str, list[str]], states: tuple[str, ...]) -> str | None:
    state = query.get("state", [None])[-1]
    if state in (None, ""):
        return None
    if state not in states:
        raise ApiError(400, f"state must be one of {', '.join(states)} (got {state!r})")
    return state


def list_jobs(node: Node, query: Mapping[str, list[str]]) -> dict[str, Any]:
    state = parse_state(query, JOB_STATES)
    jobs = node.store.jobs(state=JobState(state) if state else None, limit=parse_limit(query))
    return {"jobs": [job_brief(j) for j in jobs], "count": len(jobs)}


def get_job(node: Node, job_id: int) -> JobRow:
    job = node.store.job(job_id)
    if job is None:
        raise ApiError(404, f"no job {job_id}")
    return job


def retry_job(node: Node, job_id: int) -> dict[str, Any]:
    job = get_job(node, job_id)
    if not node.store.retry_job(job_id):
        raise ApiError(409, f"job {job_id} is {job.state}; only failed or cancelled jobs are "
                            "retried")
    node.wake_workers()
    return {"job": job_json(get_job(node, job_id))}


def cancel_job(node: Node, job_id: int) -> dict[str, Any]:
    """A queued job leaves the queue; a running one is stopped by its worker (in this process)
    and answered once it is recorded as cancelled (a few seconds at most)."""
    get_job(node, job_id)
    if not node.cancel_job(job_id):
        raise ApiError(409, f"job {job_id} is {get_job(node, job_id).state}; only queued or "
                            "running jobs are cancelled")
    return {"job": job_json(get_job(node, job_id))}


def model_provider(node: Node, package: ModelPackage) -> str | None:
    loaded = node.registry.loaded(package)
    return loaded.provider if loaded is not None else None


def models(node: Node) -> dict[str, Any]:
    out = []
    for name, package in sorted(node.packages.items()):
        m = package.manifest
        provider = model_provider(node, package)
        accepts = m.accepts
        out.append({
            "name": name,
            "version": m.version,
            "kind": m.output.kind,
            "provider": provider,
            "device": None if provider is None else ("GPU" if provider in GPU_PROVIDERS
                                                     else "CPU"),
            "loaded": provider is not None,
            "accepts": {
                "modalities": list(accepts.modalities),
                "min_slices": accepts.min_slices,
                "body_parts": list(accepts.body_parts),
                "max_slice_thickness": accepts.max_slice_thickness,
            },
            "labels": [{"value": lab.value, "name": lab.name, "colour": list(lab.colour)}
                       for lab in m.labels],
            "for_clinical_use": m.for_clinical_use,
            "intended_use": m.intended_use,
        })
    return {"models": out}


def queues(node: Node) -> dict[str, Any]:
    series = node.store.all_series()
    receiving = sum(1 for s in series if s.state == "receiving")
    jobs = node.store.count_jobs()
    outbox = node.store.count_outbox()
    return {
        "instances": node.store.count_instances(),
        "series": {"receiving": receiving, "complete": len(series) - receiving},
        "jobs": {state: jobs.get(state, 0) for state in JOB_STATES},
        "outbox": {state: outbox.get(state, 0) for state in OUTBOX_STATES},
    }


def outbox_json(item: OutboxItem) -> dict[str, Any]:
    return {
        "id": item.id, "job_id": item.job_id, "destination": item.destination,
        "sop_instance_uid": item.sop_instance_uid, "sop_class_uid": item.sop_class_uid,
        "state": item.state, "attempts": item.attempts,
        "next_attempt_at": item.next_attempt_at, "created_at": item.created_at,
        "sent_at": item.sent_at, "last_error": item.last_error,
    }


def list_outbox(node: Node, query: Mapping[str, list[str]]) -> dict[str, Any]:
    state = parse_state(query, OUTBOX_STATES)
    items = node.store.outbox_items(state=OutboxState(state) if state else None,
                                    limit=parse_limit(query))
    return {"items": [outbox_json(i) for i in items], "count": len(items)}


def retry_outbox(node: Node, item_id: int) -> dict[str, Any]:
    if node.store.retry_dead(item_id):
        node.wake_sender()
        return {"retried": 1, "id": item_id}
    item = node.store.outbox_item(item_id)  # not retried: unknown, or not a dead letter
    if item is not None:
        raise ApiError(409, f"outbox item {item_id} is {item.state}; only dead letters are "
                            "retried")
    raise ApiError(404, f"no outbox item {item_id}")


def retry_all_outbox(node: Node) -> dict[str, Any]:
    retried = node.store.retry_dead()
    if retried:
        node.wake_sender()
    return {"retried": retried}


def readiness(node: Node) -> tuple[bool, dict[str, Any]]:
    """Ready when the store answers, the DICOM listener is up and every model is loaded."""
    checks: dict[str, Any] = {}
    try:
        node.store.count_jobs()
        checks["store"] = {"ok": True}
    except Exception as exc:  # an unreachable or broken store
        checks["store"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    port = node.listener_port()
    checks["listener"] = {"ok": port is not None, "port": port}
    missing = [n for n, p in sorted(node.packages.items()) if node.registry.loaded(p) is None]
    checks["models"] = {"ok": not missing, "loaded": len(node.packages) - len(missing),
                        "missing": missing}
    return all(c["ok"] for c in checks.values()), checks


def health(node: Node) -> dict[str, Any]:
    from node import __version__

    return {"status": "ok", "version": __version__,
            "uptime_seconds": round(time.time() - node.started_at, 3)}
