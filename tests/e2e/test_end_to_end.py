"""End to end: storescu -> node -> lung_ct -> SEG + SR -> a real Orthanc; `radnode run` agrees."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pydicom
import pytest
from support.orthanc import Orthanc
from support.tools import REPO, dcmtk
from support.validators import validate_set

from node.results import read_measurements, read_segmentation
from node.synthetic import SeriesGeometry, write_series

CHEST = SeriesGeometry(rows=128, columns=128, slices=30, pixel_spacing=(3.0, 3.0),
                       slice_spacing=3.0, origin=(-192.0, -192.0, 0.0))
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"


def storescu(port: int, aec: str, files: list[Path]) -> None:
    result = subprocess.run([dcmtk("storescu"), "-aec", aec, "127.0.0.1", str(port),
                             *map(str, files)], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, TCP_NODELAY="1"))
    assert result.returncode == 0, result.stderr


def download(pacs: Orthanc, sop_uid: str, dest: Path) -> Path:
    (found,) = pacs.request("POST", "/tools/find", {
        "Level": "Instance", "Query": {"SOPInstanceUID": sop_uid}})
    with urllib.request.urlopen(f"{pacs.base_url}/instances/{found}/file", timeout=30) as r:
        dest.write_bytes(r.read())
    return dest


@pytest.fixture
def pacs(tmp_path: Path):
    with Orthanc(tmp_path / "orthanc") as orthanc:
        yield orthanc


def test_study_to_results_in_orthanc(node_factory, pacs, tmp_path) -> None:
    ct = write_series(tmp_path / "ct", CHEST)
    node = node_factory(
        {
            "completion": {"series_idle_seconds": 1, "study_idle_seconds": 1,
                           "check_interval_seconds": 0.2},
            "workers": {"models_dir": str(REPO / "models")},
            "results": {"sr_templates_dir": str(REPO / "sr_templates")},
            "sender": {"initial_backoff_seconds": 0.5},
        },
        [{"name": "ct", "models": ["lung_ct"], "match": {"Modality": "CT"}}],
    )
    # the node's destination, appended as TOML to the config it started with
    node.stop()
    node.add_destination(pacs.aet, pacs.dicom_port)
    node.start()
    storescu(pacs.dicom_port, pacs.aet, ct)  # the PACS holds the images, as in a hospital
    storescu(node.port, "RADNODE", ct)

    store = node.store()
    items = node.wait_for(lambda: (i := store.outbox_items()) and
                          all(x.state == "sent" for x in i) and i, timeout=90)
    job = store.jobs()[0]
    assert job.state == "done", job.error
    assert sorted(x.sop_class_uid for x in items) == [SEG_CLASS, SR_CLASS]
    uids = {x.sop_class_uid: x.sop_instance_uid for x in items}
    received = pacs.received()
    assert received.count(uids[SEG_CLASS]) == 1 and received.count(uids[SR_CLASS]) == 1

    # what the PACS holds passes every validator, with every reference resolving in it
    seg = download(pacs, uids[SEG_CLASS], tmp_path / "seg.dcm")
    sr = download(pacs, uids[SR_CLASS], tmp_path / "sr.dcm")
    validate_set(ct, seg, sr)
    in_pacs = set(pacs.sop_instance_uids())
    seg_ds = pydicom.dcmread(seg)
    refs = {item.ReferencedSOPInstanceUID for series in seg_ds.ReferencedSeriesSequence
            for item in series.ReferencedInstanceSequence}
    assert refs and refs <= in_pacs
    sr_ds = pydicom.dcmread(sr)
    evidence = {item.ReferencedSOPInstanceUID
                for study in sr_ds.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence
                for item in series.ReferencedSOPSequence}
    assert uids[SEG_CLASS] in evidence and evidence <= in_pacs
    assert sr_ds.StudyInstanceUID == seg_ds.StudyInstanceUID == pydicom.dcmread(
        ct[0]).StudyInstanceUID

    # the SEG gives back the node's label map, the SR its measurements
    labels = read_segmentation(seg)
    assert {s.label for s in labels.segments} == {"Left lung", "Right lung", "Body"}
    values = {(m.tracking_id, m.name): m.value for m in read_measurements(sr)}
    regions = job.result["regions"]
    volumes = {k: v for (k, name), v in values.items() if name == "Volume"}
    for side in ("Left lung", "Right lung"):
        match = [v for k, v in volumes.items() if side in k]
        assert match and abs(match[0] - regions[side]["volume_ml"]) < 1e-3

    # `radnode run` on the same images writes the same objects (UIDs and measurements)
    out = tmp_path / "offline"
    config = node.config
    result = subprocess.run([sys.executable, "-m", "node", "run", str(tmp_path / "ct"),
                             "--model", "lung_ct", "--out", str(out), "-c", str(config)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    offline_seg = pydicom.dcmread(out / "seg.dcm")
    offline_sr = pydicom.dcmread(out / "sr.dcm")
    assert offline_seg.SOPInstanceUID == uids[SEG_CLASS]
    assert offline_sr.SOPInstanceUID == uids[SR_CLASS]
    assert offline_seg.PixelData == seg_ds.PixelData
    offline_values = {(m.tracking_id, m.name): m.value for m in read_measurements(out / "sr.dcm")}
    assert offline_values == values
