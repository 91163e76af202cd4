"""The operator's commands against a running node: send, status, jobs, outbox, dead letters."""

from __future__ import annotations

import json
import subprocess
import sys

from support.orthanc import Orthanc
from support.tools import REPO

from node.synthetic import SeriesGeometry, write_series

CHEST = SeriesGeometry(rows=96, columns=96, slices=24, pixel_spacing=(4.0, 4.0),
                       slice_spacing=4.0, origin=(-192.0, -192.0, 0.0))


def radnode(node, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", *args, "-c", str(node.config)],
                          capture_output=True, text=True, timeout=120)


def radnode_send(folder, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", "send", str(folder), "--to",
                           f"RADNODE@127.0.0.1:{port}"], capture_output=True, text=True,
                          timeout=120)


def test_destination_down_dead_letters_then_retry_by_command(node_factory, tmp_path) -> None:
    pacs = Orthanc(tmp_path / "orthanc")  # ports chosen, not started: the PACS is down
    node = node_factory(
        {"completion": {"series_idle_seconds": 1, "study_idle_seconds": 1,
                        "check_interval_seconds": 0.2},
         "workers": {"models_dir": str(REPO / "models")},
         "results": {"sr_templates_dir": str(REPO / "sr_templates")},
         "sender": {"max_attempts": 2, "initial_backoff_seconds": 0.2,
                    "max_backoff_seconds": 0.5, "timeout_seconds": 2}},
        [{"name": "ct", "models": ["lung_ct"], "match": {"Modality": "CT"}}], start=False)
    node.add_destination(pacs.aet, pacs.dicom_port)
    node.start()
    files = write_series(tmp_path / "ct", CHEST)
    sent = radnode_send(tmp_path / "ct", node.port)
    assert sent.returncode == 0, sent.stderr
    assert f"sent {len(files)} of {len(files)} objects" in sent.stdout
    assert "sending to RADNODE@127.0.0.1" in sent.stderr  # the progress display

    store = node.store()
    dead = node.wait_for(lambda: (d := store.outbox_items(state="dead")) and len(d) == 2 and d,
                         timeout=90)
    assert all("cannot connect" in d.last_error for d in dead)
    listing = radnode(node, "outbox", "list", "--state", "dead")
    assert listing.returncode == 0 and listing.stdout.count("dead") == 2
    assert "cannot connect" in listing.stdout
    status = radnode(node, "status")
    assert "outbox:    pending 0, sent 0, dead 2" in status.stdout
    assert "dead letter" in status.stdout and "radnode outbox retry" in status.stdout

    with pacs:  # the PACS is back; a person retries the dead letters
        retry = radnode(node, "outbox", "retry", "--all")
        assert retry.returncode == 0 and "2 dead letters queued to send again" in retry.stdout
        node.wait_for(lambda: store.count_outbox().get("sent") == 2, timeout=60)
        assert sorted(pacs.received()) == sorted(d.sop_instance_uid for d in dead)


def test_status_jobs_show_and_retry(node_factory, tmp_path) -> None:
    node = node_factory(
        {"completion": {"series_idle_seconds": 1, "study_idle_seconds": 1,
                        "check_interval_seconds": 0.2},
         "workers": {"models_dir": str(REPO / "models")},
         "results": {"sr_templates_dir": str(REPO / "sr_templates")}},
        [{"name": "ct", "models": ["lung_ct"], "match": {"Modality": "CT"}}])
    files = write_series(tmp_path / "ct", CHEST)
    files[5].unlink()  # a missing slice: the job fails with a reason
    assert radnode_send(tmp_path / "ct", node.port).returncode == 0
    store = node.store()
    job = node.wait_for(lambda: (j := store.jobs()) and j[0].state == "failed" and j[0],
                        timeout=60)
    status = radnode(node, "status")
    assert status.returncode == 0
    assert "jobs:      queued 0, running 0, done 0, failed 1" in status.stdout
    assert f"job {job.id}" in status.stdout and job.error in status.stdout
    shown = json.loads(radnode(node, "jobs", "show", str(job.id)).stdout)
    assert shown["state"] == "failed" and shown["model"] == "lung_ct"
    retried = radnode(node, "jobs", "retry", str(job.id))
    assert retried.returncode == 0 and f"job {job.id} queued again" in retried.stdout
    again = node.wait_for(lambda: (j := store.job(job.id)) and j.state == "failed" and
                          j.attempts == 1 and j.finished_at > job.finished_at and j, timeout=60)
    assert again.error == job.error
    refused = radnode(node, "jobs", "cancel", str(job.id))
    assert refused.returncode == 1 and "only queued jobs" in refused.stderr
    assert radnode(node, "jobs", "show", "999").returncode == 1
