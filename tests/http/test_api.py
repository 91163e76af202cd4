"""The HTTP interface of a real node, over loopback, after a real lung_ct job: every endpoint,
clear errors, /metrics in the exposition format, correlated text logs, and binding to localhost.
"""

from __future__ import annotations

import io
import math
import re
import socket
import subprocess

import numpy as np
import pytest
from PIL import Image
from support.tools import REPO, dcmtk

STAGES = {"load", "preprocess", "inference", "postprocess", "measure", "write"}


def test_health_and_ready(lung_node) -> None:
    health = lung_node.get("/health")
    assert health.status == 200 and health.json()["status"] == "ok"
    assert health.json()["uptime_seconds"] > 0
    ready = lung_node.get("/ready")
    assert ready.status == 200
    body = ready.json()
    assert body["ready"] is True
    assert body["checks"]["listener"] == {"ok": True, "port": lung_node.node.port}
    shipped = len(list((REPO / "models").glob("*/model.toml")))  # the node serves them all
    assert body["checks"]["models"] == {"ok": True, "loaded": shipped, "missing": []}
    assert body["checks"]["store"]["ok"] is True


def test_jobs_list_and_filters(lung_node) -> None:
    reply = lung_node.get("/api/jobs")
    assert reply.status == 200
    jobs = reply.json()["jobs"]
    assert [j["id"] for j in jobs] == [lung_node.job.id]
    job = jobs[0]
    assert job["state"] == "done" and job["model"] == "lung_ct"
    assert job["series_uid"] == lung_node.job.series_uid
    assert job["regions"] == ["Left lung", "Right lung"]
    assert "result" not in job  # the list stays small; the details are per job
    assert lung_node.get("/api/jobs?state=done&limit=5").json()["count"] == 1
    assert lung_node.get("/api/jobs?state=failed").json() == {"jobs": [], "count": 0}
    bad = lung_node.get("/api/jobs?state=bogus")
    assert bad.status == 400 and "state must be one of" in bad.json()["error"]["message"]
    assert lung_node.get("/api/jobs?limit=0").status == 400
    assert lung_node.get("/api/jobs?limit=x").status == 400


def test_job_details(lung_node) -> None:
    job = lung_node.get(f"/api/jobs/{lung_node.job.id}").json()
    assert job["state"] == job["outcome"] == "done"
    assert job["error"] is None
    assert job["model_version"] == "1.1.0" and job["provider"] == "CPUExecutionProvider"
    assert set(job["timings"]) == STAGES and all(v >= 0 for v in job["timings"].values())
    assert job["total_seconds"] == pytest.approx(sum(job["timings"].values()), abs=1e-3)
    assert job["attempts"] == 1 and job["finished_at"] >= job["started_at"] >= job["created_at"]
    regions = job["result"]["regions"]
    for side in ("Left lung", "Right lung"):  # the phantom's lungs: 1166 ml each
        assert abs(regions[side]["volume_ml"] - 1166) / 1166 < 0.1
    assert job["previews"] == [f"/api/jobs/{job['id']}/preview/{n}.png" for n in range(3)]


def test_previews_are_rendered_and_cached(lung_node) -> None:
    job = lung_node.job
    images = []
    for n in range(3):
        reply = lung_node.get(f"/api/jobs/{job.id}/preview/{n}.png")
        assert reply.status == 200 and reply.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(reply.body)) as png:
            assert png.format == "PNG" and png.mode == "RGB"
            images.append(np.asarray(png))
    image = images[1]
    assert image.shape == (384, 384, 3)  # 128 px at 3 mm, enlarged 3 times
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    assert (69, 110, 53) in colours and (128, 174, 128) in colours  # lung outlines, manifest
    # the right lung is drawn on the image's left (patient right, as viewers show it)
    right = np.all(image == (69, 110, 53), axis=2).nonzero()[1].mean()
    left = np.all(image == (128, 174, 128), axis=2).nonzero()[1].mean()
    assert right < 192 < left
    cached = sorted(p.name for p in (lung_node.node.data_dir / "results").rglob("preview/*.png"))
    assert cached == ["0.png", "1.png", "2.png"]
    assert lung_node.get(f"/api/jobs/{job.id}/preview/3.png").status == 404
    assert lung_node.get("/api/jobs/999/preview/0.png").status == 404


def test_models(lung_node) -> None:
    models = {m["name"]: m for m in lung_node.get("/api/models").json()["models"]}
    assert set(models) == {p.parent.name for p in (REPO / "models").glob("*/model.toml")}
    model = models["lung_ct"]
    assert model["name"] == "lung_ct" and model["version"] == "1.1.0"
    assert model["kind"] == "segmentation"
    assert model["provider"] == "CPUExecutionProvider" and model["device"] == "CPU"
    assert model["accepts"]["modalities"] == ["CT"] and model["accepts"]["min_slices"] == 20
    assert model["labels"][0] == {"value": 1, "name": "Left lung", "colour": [128, 174, 128]}


def test_queues(lung_node) -> None:
    queues = lung_node.get("/api/queues").json()
    assert queues == {
        "instances": 30,
        "series": {"receiving": 0, "complete": 1},
        "jobs": {"queued": 0, "running": 0, "done": 1, "failed": 0, "cancelled": 0},
        "outbox": {"pending": 0, "sent": 0, "dead": 0},
    }


def test_outbox_endpoints(lung_node) -> None:
    assert lung_node.get("/api/outbox").json() == {"items": [], "count": 0}
    assert lung_node.get("/api/outbox?state=dead").json()["count"] == 0
    assert lung_node.get("/api/outbox?state=nope").status == 400
    assert lung_node.post("/api/outbox/retry-all").json() == {"retried": 0}
    missing = lung_node.post("/api/outbox/12345/retry")
    assert missing.status == 404 and missing.json()["error"]["message"] == "no outbox item 12345"


def test_actions_on_a_done_job_are_refused_clearly(lung_node) -> None:
    job_id = lung_node.job.id
    retry = lung_node.post(f"/api/jobs/{job_id}/retry")
    assert retry.status == 409
    assert retry.json()["error"]["message"] == (
        f"job {job_id} is done; only failed or cancelled jobs are retried")
    cancel = lung_node.post(f"/api/jobs/{job_id}/cancel")
    assert cancel.status == 409
    assert "only queued or running jobs are cancelled" in cancel.json()["error"]["message"]


def test_errors_are_json(lung_node) -> None:
    unknown = lung_node.get("/api/jobs/987654")
    assert unknown.status == 404
    assert unknown.json() == {"error": {"status": 404, "message": "no job 987654"}}
    assert lung_node.post("/api/jobs/987654/retry").status == 404
    nowhere = lung_node.get("/api/nothing-here")
    assert nowhere.status == 404 and "no such endpoint" in nowhere.json()["error"]["message"]
    wrong = lung_node.get(f"/api/jobs/{lung_node.job.id}/retry")
    assert wrong.status == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["status"] == 405
    post_list = lung_node.post("/api/jobs")
    assert post_list.status == 405 and post_list.headers["allow"] == "GET"


# -- /metrics -------------------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def parse_exposition(text: str) -> dict[str, dict]:
    """A strict reader of the text format: HELP and TYPE before samples, families not
    interleaved, well-formed labels and values, histogram buckets cumulative."""
    assert text.endswith("\n")
    families: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in families, f"family {name} declared twice"
            families[name] = {"help": line.split(" ", 3)[3], "type": None, "samples": []}
            current = name
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name == current and families[name]["type"] is None, line
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            families[name]["type"] = kind
            continue
        assert not line.startswith("#") and line.strip(), f"unexpected line {line!r}"
        match = _SAMPLE.match(line)
        assert match, f"malformed sample {line!r}"
        name, _, label_text, value = match.groups()
        assert current is not None and families[current]["type"], line
        base = current
        allowed = {base} if families[base]["type"] != "histogram" else {
            f"{base}_bucket", f"{base}_sum", f"{base}_count"}
        assert name in allowed, f"{name} outside its family {base}"
        labels = {}
        if label_text:
            pos = 0
            while pos < len(label_text):
                m = _LABEL.match(label_text, pos)
                assert m, f"malformed labels in {line!r}"
                labels[m.group(1)] = m.group(2)
                pos = m.end()
        number = float(value)  # raises on junk; +Inf parses too
        assert not math.isnan(number)
        families[base]["samples"].append((name, labels, number))
    for name, fam in families.items():
        if fam["type"] == "counter":
            assert name.endswith("_total") and all(v >= 0 for _, _, v in fam["samples"])
        if fam["type"] == "histogram":
            _check_histogram(name, fam["samples"])
    return families


def _check_histogram(name: str, samples: list) -> None:
    groups: dict[tuple, dict] = {}
    for sample, labels, value in samples:
        key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        group = groups.setdefault(key, {"buckets": []})
        if sample.endswith("_bucket"):
            group["buckets"].append((float(labels["le"]), value))
        else:
            group[sample.rsplit("_", 1)[1]] = value
    for key, group in groups.items():
        bounds = [b for b, _ in group["buckets"]]
        counts = [c for _, c in group["buckets"]]
        assert bounds == sorted(bounds) and bounds[-1] == math.inf, (name, key)
        assert counts == sorted(counts), f"{name}{key}: buckets not cumulative"
        assert counts[-1] == group["count"], (name, key)


def value(families: dict, name: str, **labels: str) -> float:
    base = name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in families:
            base = name[: -len(suffix)]
    found = [v for n, lab, v in families[base]["samples"]
             if n == name and all(lab.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_metrics(lung_node) -> None:
    # one association rejected: the called AE title is not the node's
    echo = subprocess.run([dcmtk("echoscu"), "-aec", "NOT_RADNODE", "127.0.0.1",
                           str(lung_node.node.port)], capture_output=True, timeout=30)
    assert echo.returncode != 0
    reply = lung_node.get("/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    m = parse_exposition(reply.body.decode())

    spool = lung_node.node.data_dir / "spool"
    stored = sorted(p for p in spool.rglob("*.dcm"))
    assert len(stored) == len(lung_node.files) == 30
    assert value(m, "radnode_instances_received_total") == 30  # slices sent
    assert value(m, "radnode_bytes_received_total") == sum(p.stat().st_size for p in stored)
    assert value(m, "radnode_instances_stored") == 30
    assert value(m, "radnode_associations_total", result="accepted") == 1
    assert value(m, "radnode_associations_total", result="rejected") == 1
    assert value(m, "radnode_series", state="complete") == 1
    assert value(m, "radnode_jobs", state="done", model="lung_ct") == 1
    assert value(m, "radnode_jobs", state="failed", model="lung_ct") == 0
    timings = lung_node.job.timings
    for stage in STAGES:
        labels = {"stage": stage, "model": "lung_ct"}
        assert value(m, "radnode_job_stage_duration_seconds_count", **labels) == 1
        assert value(m, "radnode_job_stage_duration_seconds_sum", **labels) == pytest.approx(
            timings[stage], abs=1e-5)
        assert value(m, "radnode_job_stage_duration_seconds_bucket", le="600", **labels) == 1
    assert m["radnode_job_stage_duration_seconds"]["type"] == "histogram"
    for state in ("pending", "sent", "dead"):
        assert value(m, "radnode_outbox_items", state=state) == 0
    assert value(m, "radnode_send_objects_total", outcome="sent") == 0
    assert value(m, "radnode_spool_free_bytes") > 0
    assert value(m, "radnode_model_provider", model="lung_ct",
                 provider="CPUExecutionProvider") == 1
    assert value(m, "radnode_model_on_gpu", model="lung_ct") == 0
    assert value(m, "radnode_listener_up") == 1


def test_the_parser_catches_malformed_exposition() -> None:
    good = "# HELP a_total x\n# TYPE a_total counter\na_total 1\n"
    assert parse_exposition(good)["a_total"]["samples"] == [("a_total", {}, 1.0)]
    for bad in ("a_total 1\n",  # no TYPE
                good + "# HELP b x\n# TYPE b gauge\na_total 2\n",  # interleaved
                '# HELP b x\n# TYPE b gauge\nb{x="1} 1\n',  # broken label
                "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
                "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"):  # not cumulative
        with pytest.raises(AssertionError):
            parse_exposition(bad)


# -- logs and binding -----------------------------------------------------------------------

def test_text_logs_name_the_job_and_never_the_patient(lung_node, patient) -> None:
    log = lung_node.node.log()
    job = lung_node.job
    tag = f"[job {job.id} series {job.series_uid}]"
    job_lines = [line for line in log.splitlines() if tag in line]
    assert any(f"job {job.id} done in" in line for line in job_lines)
    assert any("radnode.inference" in line or "radnode.worker" in line for line in job_lines)
    for secret in patient:
        assert secret not in log
        assert secret.split("^")[0] not in log


def _outside_address() -> str | None:
    """An address of this machine that is not loopback (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks a route
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_listens_on_localhost_only_by_default(lung_node, fetch) -> None:
    port = lung_node.node.http_port
    assert f"HTTP interface on http://127.0.0.1:{port}/" in lung_node.node.log()
    address = _outside_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    with pytest.raises(OSError):
        fetch(port, "GET", "/health", host=address, timeout=3)
