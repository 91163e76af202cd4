"""No patient data in any log line, at any level, over a full run with failures."""

from __future__ import annotations

import os
import subprocess

import pydicom
from support.orthanc import Orthanc
from support.tools import dcmtk

from node.synthetic import SeriesGeometry, write_series

CHEST = SeriesGeometry(rows=96, columns=96, slices=24, pixel_spacing=(4.0, 4.0),
                       slice_spacing=4.0, origin=(-192.0, -192.0, 0.0))
PHI = {
    "PatientName": "Zzyzx^Quentin",
    "PatientID": "PHI-ID-7731",
    "PatientBirthDate": "19450317",
    "AccessionNumber": "ACC99812",
    "ReferringPhysicianName": "Hollowmere^Dr",
    "InstitutionName": "Saint Phiblock Hospital",
    "StudyDescription": "Chest for Quentin",
}


def storescu(port: int, aec: str, files) -> None:
    subprocess.run([dcmtk("storescu"), "-aec", aec, "127.0.0.1", str(port), *map(str, files)],
                   capture_output=True, timeout=120, env=dict(os.environ, TCP_NODELAY="1"))


def test_a_full_debug_run_logs_no_patient_data(node_factory, tmp_path) -> None:
    name, pid = PHI["PatientName"], PHI["PatientID"]
    extra = {k: v for k, v in PHI.items() if k not in ("PatientName", "PatientID")}
    good = write_series(tmp_path / "good", CHEST, patient_name=name, patient_id=pid, extra=extra)
    broken = write_series(tmp_path / "broken", CHEST, patient_name=name, patient_id=pid,
                          extra=extra)
    broken[3].unlink()  # a missing slice: a failed job with a reason
    bad = pydicom.dcmread(good[0])
    bad.SOPInstanceUID = "1.2.3"
    bad.SeriesInstanceUID = "../" + pid  # refused at C-STORE
    bad.save_as(tmp_path / "bad.dcm")
    with Orthanc(tmp_path / "orthanc") as pacs:
        node = node_factory(
            {"node": {"log_level": "DEBUG"},
             "completion": {"series_idle_seconds": 1, "study_idle_seconds": 1,
                            "check_interval_seconds": 0.2}},
            [{"name": "ct", "models": ["lung_ct"], "match": {"Modality": "CT"}}], start=False)
        node.add_destination(pacs.aet, pacs.dicom_port)
        node.start()
        storescu(node.port, "RADNODE", [*good, *(p for p in broken if p.exists())])
        storescu(node.port, "RADNODE", [tmp_path / "bad.dcm"])
        store = node.store()
        node.wait_for(lambda: len(store.jobs()) == 2
                      and all(j.state in ("done", "failed") for j in store.jobs())
                      and store.count_outbox().get("sent") == 2, timeout=90)
        node.stop()
    log = node.log()
    assert "job 1" in log and "refused" in log and "failed" in log  # the run did log
    assert sorted(j.state for j in store.jobs()) == ["done", "failed"]
    words = {PHI["PatientName"], *PHI["PatientName"].split("^"), PHI["PatientID"],
             PHI["PatientBirthDate"], PHI["AccessionNumber"], "Hollowmere",
             PHI["InstitutionName"], "Phiblock", PHI["StudyDescription"]}
    leaks = [(w, line) for line in log.splitlines() for w in words if w in line]
    assert leaks == []
