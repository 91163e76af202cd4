"""SIGKILL the node again and again, during ingest, jobs and sending: nothing is lost or doubled.

A sender (pynetdicom, over real sockets) sends four CT series and, like a PACS, sends again
what did not get a Success. The node is killed at random moments, chosen to land while it
receives, while a job runs and while results are being sent, and restarted each time. At the
end every instance that got Success is in the spool, every job is done, and Orthanc holds each
SEG and SR exactly once.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pydicom
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from support.orthanc import Orthanc

from node.synthetic import SeriesGeometry, write_series

KILLS = 21
CHEST = SeriesGeometry(rows=96, columns=96, slices=24, pixel_spacing=(4.0, 4.0),
                       slice_spacing=4.0, origin=(-192.0, -192.0, 0.0))
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"


class Modality:
    """Sends files in order; remembers which ones the node answered with Success."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.succeeded: set[str] = set()
        self.uids = {f: pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
                     for f in files}

    def pending(self) -> list[Path]:
        return [f for f in self.files if self.uids[f] not in self.succeeded]

    def send_some(self, port: int, stop: threading.Event) -> None:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CTImageStorage)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
        try:
            assoc = ae.associate("127.0.0.1", port, ae_title="RADNODE")
        except Exception:
            return
        if not assoc.is_established:
            return
        try:
            for path in self.pending():
                if stop.is_set() or not assoc.is_established:
                    break
                try:
                    status = assoc.send_c_store(pydicom.dcmread(path))
                except Exception:
                    break
                if "Status" in status and status.Status == 0:
                    self.succeeded.add(self.uids[path])
        finally:
            if assoc.is_established:
                assoc.release()


def wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_twenty_kills(node_factory, tmp_path) -> None:
    rng = random.Random(20261122)
    series = [write_series(tmp_path / f"ct{n}", CHEST) for n in range(8)]
    files = [f for s in series for f in s]
    with Orthanc(tmp_path / "orthanc") as pacs:
        node = node_factory(
            {"node": {"log_level": "INFO"},
             "completion": {"series_idle_seconds": 3, "study_idle_seconds": 3,
                            "check_interval_seconds": 0.1},
             "workers": {"max_attempts": 100},
             "sender": {"initial_backoff_seconds": 0.2, "max_backoff_seconds": 1.0,
                        "max_attempts": 1000}},
            [{"name": "ct", "models": ["lung_ct"], "match": {"Modality": "CT"}}], start=False)
        node.add_destination(pacs.aet, pacs.dicom_port)
        modality = Modality(files)
        moments = {"ingest": 0, "job": 0, "sending": 0, "other": 0}
        node.start()
        store = node.store()
        for kill in range(KILLS):
            target = ("ingest", "job", "sending")[kill % 3]
            stop = threading.Event()
            sender = threading.Thread(target=modality.send_some, args=(node.port, stop))
            if target == "ingest":  # kill in the middle of a C-STORE stream
                sender.start()
                time.sleep(rng.uniform(0.05, 0.4))
                hit = sender.is_alive()
            elif target == "job":  # kill while a job runs (a re-queued one, or a new one)
                sender.start()
                hit = wait(lambda: bool(store.jobs(state="running")), 12)
                time.sleep(rng.uniform(0.0, 0.3))
                hit = hit and bool(store.jobs(state="running"))
            else:  # kill while results wait in the outbox: the PACS is down for a moment
                pacs.kill()
                sender.start()
                hit = wait(lambda: bool(store.count_outbox().get("pending")), 12)
            moments[target if hit else "other"] += 1
            node.kill()
            stop.set()
            sender.join(10)
            pacs.start()
            node.start()

        # the last life: let everything finish
        while modality.pending():
            modality.send_some(node.port, threading.Event())
        done = node.wait_for(
            lambda: len(store.all_series()) == len(series)
            and all(s.state == "complete" for s in store.all_series())
            and all(j.state == "done" for j in store.jobs())
            and store.count_outbox().get("sent", 0) == 2 * len(store.jobs()), timeout=240)
        assert done
        # the kills landed where they were aimed, mostly
        assert moments["ingest"] >= 5 and moments["job"] >= 4 and moments["sending"] >= 4, moments

        # every instance that got Success is in the spool and the store
        spool = node.data_dir / "spool"
        stored = {p.stem for p in spool.rglob("*.dcm")}
        assert modality.succeeded == set(modality.uids.values())
        assert modality.succeeded <= stored
        assert all(store.has_instance(uid) for uid in modality.succeeded)
        node.kill()
        node.start()  # a restart after all that finds nothing half-written
        assert not list((spool / ".tmp").iterdir())

        # every series' latest generation ran; a series that a kill cut in two completed early
        # and re-ran when its late instances came (the default late-instance policy)
        jobs = store.jobs()
        latest = {s.series_uid: s.generation for s in store.all_series()}
        assert {(j.series_uid, j.generation) for j in jobs} >= set(latest.items())
        # the PACS holds each result object exactly once
        results = {x.sop_instance_uid for x in store.outbox_items()}
        found = pacs.request("POST", "/tools/find", {"Level": "Instance", "Query": {},
                                                     "Expand": True})
        held = [i["MainDicomTags"]["SOPInstanceUID"] for i in found
                if i["MainDicomTags"]["SOPInstanceUID"] in results]
        assert len(held) == len(results) == 2 * len(jobs) and len(set(held)) == len(held)
        print(f"kills by moment: {moments}; jobs {len(jobs)} for {len(series)} series; "
              f"receipts of results in Orthanc: "
              f"{sum(r in results for r in pacs.received())} for {len(results)} objects")
