"""Fixtures for the HTTP interface tests: a real node that has run a real lung_ct job.

No ``__init__.py`` here on purpose: a package named ``http`` would shadow the standard library.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.node_process import NodeProcess
from support.tools import REPO, dcmtk

from node.store import JobRow
from node.synthetic import SeriesGeometry, write_series

CHEST = SeriesGeometry(rows=128, columns=128, slices=30, pixel_spacing=(3.0, 3.0),
                       slice_spacing=3.0, origin=(-192.0, -192.0, 0.0))
PATIENT_NAME = "Zyxwvut^Quasimodo"  # distinctive, so a test can prove it is never logged
PATIENT_ID = "PID-7731-XQ"
STAGES = {"load", "preprocess", "inference", "postprocess", "measure", "write"}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers["content-type"].startswith("application/json"), self.headers
        return json.loads(self.body)


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
            host: str = "127.0.0.1", timeout: float = 30.0) -> Reply:
    """One real HTTP request over loopback (no client library beyond the standard one)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def send(port: int, files: list[Path]) -> None:
    result = subprocess.run([dcmtk("storescu"), "-aec", "RADNODE", "127.0.0.1", str(port),
                             *map(str, files)], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, TCP_NODELAY="1"))
    assert result.returncode == 0, result.stderr


def lung_sections(**extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    sections: dict[str, dict[str, Any]] = {
        "completion": {"series_idle_seconds": 1, "study_idle_seconds": 1,
                       "check_interval_seconds": 0.2},
        "workers": {"models_dir": str(REPO / "models")},
        "results": {"sr_templates_dir": str(REPO / "sr_templates")},
    }
    sections.update(extra)
    return sections


ROUTES = [{"name": "ct", "models": ["lung_ct"], "match": {"Modality": "CT"}}]


@dataclass
class LungNode:
    node: NodeProcess
    job: JobRow
    files: list[Path]

    def get(self, path: str, **kw: Any) -> Reply:
        return request(self.node.http_port, "GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Reply:
        return request(self.node.http_port, "POST", path, **kw)


def run_lung_job(workdir: Path, **sections: dict[str, Any]) -> LungNode:
    """Start a node, send it a synthetic chest CT and wait for its lung_ct job to finish."""
    node = NodeProcess(workdir / "node", lung_sections(**sections), ROUTES).start()
    try:
        files = write_series(workdir / "ct", CHEST, patient_name=PATIENT_NAME,
                             patient_id=PATIENT_ID)
        send(node.port, files)
        store = node.store()
        job = node.wait_for(lambda: next((j for j in store.jobs()
                                          if j.state in ("done", "failed")), None), timeout=60)
        store.close()
        assert job.state == "done", job.error
    except BaseException:
        node.kill()
        raise
    return LungNode(node, job, files)


@pytest.fixture(scope="module")
def lung_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LungNode]:
    """One real node per test module, with one finished lung_ct job (text logs, no token)."""
    running = run_lung_job(tmp_path_factory.mktemp("lung"))
    yield running
    running.node.stop()


# Test modules here cannot import this file (a package named ``http`` would shadow the
# standard library), so the helpers reach them as fixtures.

@pytest.fixture(scope="session")
def fetch() -> Any:
    """``fetch(port, method, path, headers=None, host=...) -> Reply``."""
    return request


@pytest.fixture(scope="session")
def lung_job() -> Any:
    """``lung_job(workdir, **sections) -> LungNode``: a node with one finished lung_ct job."""
    return run_lung_job


@pytest.fixture(scope="session")
def patient() -> tuple[str, str]:
    """The synthetic series' patient name and ID (never to appear in a log)."""
    return PATIENT_NAME, PATIENT_ID
