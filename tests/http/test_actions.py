"""Retry and cancel over HTTP, on jobs and dead letters put in known states in a real job store
(an HTTP server in this process, over loopback; no workers, so nothing moves on its own)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.tools import free_port

from node import metrics
from node.config import HttpConfig, build_config
from node.http import HttpServer
from node.http.api import Node
from node.inference.runtime import SessionRegistry
from node.sender import Sender, outbox_rows
from node.store import InstanceRecord, JobState, JobStore, NewJob, NewOutboxItem, open_store
from node.synthetic import SeriesGeometry, write_series

CT = "1.2.840.10008.5.1.4.1.1.2"


class Calls:
    def __init__(self) -> None:
        self.workers = 0
        self.sender = 0


@pytest.fixture
def setup(tmp_path: Path, fetch) -> Iterator[tuple[JobStore, Calls, object]]:
    store = open_store(tmp_path / "radnode.db")
    calls = Calls()

    def wake_workers() -> None:
        calls.workers += 1

    def wake_sender() -> None:
        calls.sender += 1

    node = Node(store=store, spool_root=tmp_path / "spool", packages={},
                registry=SessionRegistry(), listener_port=lambda: None,
                free_bytes=lambda: 12345, wake_workers=wake_workers, wake_sender=wake_sender,
                cancel_job=store.cancel_job, ae_title="RADNODE")  # no workers: queued jobs only
    server = HttpServer(HttpConfig(port=free_port()), node)
    server.start()

    def call(method: str, path: str):
        return fetch(server.port, method, path)

    yield store, calls, call
    server.stop()
    store.close()


def _job(store: JobStore, n: int) -> int:
    series, study = f"1.2.3.{n}", "1.2.3"
    store.record_instance(InstanceRecord(f"1.2.3.{n}.1", CT, series, study, "CT",
                                         f"{study}/{series}/x.dcm", 10, "1.2.840.10008.1.2"))
    store.complete_series(store.series(series), False, [NewJob("ct", "lung_ct")])
    return store.jobs(series_uid=series)[0].id


def test_retry_a_failed_job_and_cancel_a_queued_one(setup) -> None:
    store, calls, call = setup
    failed, queued = _job(store, 1), _job(store, 2)
    assert store.claim_job().id == failed
    store.finish_job(failed, JobState.FAILED, error="the series has a gap")
    shown = call("GET", f"/api/jobs/{failed}").json()
    assert shown["state"] == shown["outcome"] == "failed"
    assert shown["error"] == "the series has a gap" and shown["previews"] == []

    retried = call("POST", f"/api/jobs/{failed}/retry")
    assert retried.status == 200
    assert retried.json()["job"]["state"] == "queued" and retried.json()["job"]["error"] is None
    assert store.job(failed).state == "queued" and calls.workers == 1

    cancelled = call("POST", f"/api/jobs/{queued}/cancel")
    assert cancelled.status == 200 and cancelled.json()["job"]["outcome"] == "cancelled"
    assert store.job(queued).state == "cancelled"
    again = call("POST", f"/api/jobs/{queued}/cancel")
    assert again.status == 409
    assert again.json()["error"]["message"] == (
        f"job {queued} is cancelled; only queued or running jobs are cancelled")
    assert call("POST", f"/api/jobs/{queued}/retry").json()["job"]["state"] == "queued"


def test_retry_dead_letters_one_and_all(setup) -> None:
    store, calls, call = setup
    store.enqueue([NewOutboxItem("pacs", f"r/{n}.dcm", f"2.25.{n}", CT) for n in range(3)])
    items = sorted(i.id for i in store.outbox_items())
    for item in items:
        store.mark_failed(item, "association rejected", 0.0, dead=True)
    dead = call("GET", "/api/outbox?state=dead").json()
    assert dead["count"] == 3 and dead["items"][0]["last_error"] == "association rejected"
    assert dead["items"][0]["destination"] == "pacs"
    assert "path" not in dead["items"][0]

    one = call("POST", f"/api/outbox/{items[0]}/retry")
    assert one.status == 200 and one.json() == {"retried": 1, "id": items[0]}
    assert call("GET", "/api/queues").json()["outbox"] == {"pending": 1, "sent": 0, "dead": 2}
    not_dead = call("POST", f"/api/outbox/{items[0]}/retry")
    assert not_dead.status == 409 and "only dead letters" in not_dead.json()["error"]["message"]
    assert call("POST", "/api/outbox/retry-all").json() == {"retried": 2}
    assert call("GET", "/api/queues").json()["outbox"] == {"pending": 3, "sent": 0, "dead": 0}
    assert calls.sender == 2


def test_not_ready_without_listener_or_models(setup) -> None:
    _, _, call = setup
    ready = call("GET", "/ready")
    assert ready.status == 503
    assert ready.json()["ready"] is False
    assert ready.json()["checks"]["listener"] == {"ok": False, "port": None}
    assert call("GET", "/health").status == 200  # alive, though not ready


def test_the_sender_counts_its_rounds(tmp_path: Path) -> None:
    """The two lines in Sender.run_once: a destination that refuses counts as a failure."""
    config = build_config({"destinations": [{"name": "pacs", "kind": "dicom",
                                             "ae_title": "PACS", "host": "127.0.0.1",
                                             "port": free_port()}]}, tmp_path)
    store = open_store(tmp_path / "radnode.db")
    (path,) = write_series(tmp_path / "ct", SeriesGeometry(rows=8, columns=8, slices=1))
    store.enqueue(outbox_rows(["pacs"], [path]))
    before = metrics.COUNTERS_REGISTRY.value("radnode_send_destination_failures_total")
    summary = Sender(config, store, tmp_path).run_once()
    store.close()
    assert summary.destination_errors and summary.sent == 0
    after = metrics.COUNTERS_REGISTRY.value("radnode_send_destination_failures_total")
    assert after == before + 1
