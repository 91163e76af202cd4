"""Helpers for the sender tests: small DICOM objects queued in a real job store, configs,
and DCMTK storescp as a peer."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pydicom

from node.config import Config, build_config
from node.store import InstanceRecord, JobStore, NewJob, NewOutboxItem
from node.synthetic import SeriesGeometry, write_series
from support.tools import dcmtk, free_port

TINY = SeriesGeometry(rows=16, columns=16, slices=1, pixel_spacing=(1.0, 1.0))


def make_objects(folder: Path, n: int, **kwargs: Any) -> list[tuple[str, str, str]]:
    """``n`` small CT instances standing in for result objects: (path, SOP instance, class)."""
    geometry = SeriesGeometry(rows=TINY.rows, columns=TINY.columns, slices=n,
                              pixel_spacing=TINY.pixel_spacing)
    out = []
    for path in write_series(folder, geometry, -1000.0, **kwargs):
        meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        out.append((str(path), str(meta.MediaStorageSOPInstanceUID),
                    str(meta.MediaStorageSOPClassUID)))
    return out


def make_config(tmp_path: Path, destinations: list[dict[str, Any]],
                peers: list[dict[str, Any]] | None = None, **sender: Any) -> Config:
    raw: dict[str, Any] = {
        "node": {"data_dir": str(tmp_path / "data")},
        "sender": {"initial_backoff_seconds": 1.0, "max_backoff_seconds": 4.0,
                   "max_attempts": 5, "timeout_seconds": 5.0, **sender},
        "destinations": destinations,
    }
    if peers:
        raw["peers"] = peers
    return build_config(raw, tmp_path)


def queue(store: JobStore, destination: str, objects: list[tuple[str, str, str]],
          now: float, job_id: int | None = None) -> None:
    store.enqueue([NewOutboxItem(destination, p, uid, cls) for p, uid, cls in objects], job_id,
                  now=now)


def job_from(store: JobStore, calling_ae: str, now: float) -> int:
    """A job whose series came from ``calling_ae`` (as the receiver and scheduler record it)."""
    series = pydicom.uid.generate_uid()
    store.record_instance(InstanceRecord(
        sop_instance_uid=pydicom.uid.generate_uid(), sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        series_uid=series, study_uid=pydicom.uid.generate_uid(), modality="CT",
        path=f"{series}/1.dcm", size=1, transfer_syntax="1.2.840.10008.1.2.1",
        calling_ae=calling_ae), now=now)
    row = store.series(series)
    assert row is not None
    store.complete_series(row, False, [NewJob("route", "model")], now=now)
    (job,) = store.jobs(series_uid=series)
    return job.id


class StoreSCP:
    """DCMTK storescp as a peer: every received object lands in its own file (-uf), so a
    duplicate send shows as an extra file; -v logs each association."""

    def __init__(self, workdir: Path, *args: str, aet: str = "PEER") -> None:
        self.dir = workdir / "received"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = workdir / "storescp.log"
        self.args = [dcmtk("storescp"), "-v", "-aet", aet, "-uf", "-od", str(self.dir),
                     *args, str(self.port)]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> StoreSCP:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                            env=dict(os.environ, TCP_NODELAY="1"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(self.log.read_text()) from None
                time.sleep(0.05)
        raise TimeoutError(self.log.read_text())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def received(self) -> list[str]:
        """SOP Instance UIDs of the files received, one per receipt."""
        return sorted(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                      for p in self.dir.iterdir() if p.is_file())

    def associations(self) -> int:
        """Associations accepted (the readiness probe connects but never associates)."""
        return self.log.read_text(errors="replace").count("Association Acknowledged")


