"""End to end with the real brain models: a 3D T1 MR series (a public head scan written as DICOM)
sent by storescu, routed by the default configuration's route, SEG and SR of both models in a real
Orthanc with every reference resolving."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pydicom
import pytest
from e2e.test_end_to_end import SEG_CLASS, SR_CLASS, download, storescu
from support.orthanc import Orthanc
from support.tools import REPO
from support.validators import validate_set

from node.imaging.inputs import load_input
from node.results import read_measurements, read_segmentation
from node.synthetic import write_volume_series


@pytest.fixture(scope="module")
def t1_series(shared_data: Path, tmp_path_factory) -> list[Path]:
    source = shared_data / "mr_brain_niivue" / "chris_t1.nii.gz"
    if not source.is_file():
        pytest.skip("mr_brain_niivue/chris_t1.nii.gz is not in the shared data")
    return write_volume_series(load_input(source), tmp_path_factory.mktemp("t1"))


def default_routes() -> list[dict]:
    """The routes of the bundled config.toml: the test uses them as shipped."""
    return tomllib.loads((REPO / "config.toml").read_text(encoding="utf-8"))["routes"]


def test_route_explain_sends_a_3d_t1_to_the_brain_models(t1_series):
    folder = t1_series[0].parent
    result = subprocess.run([sys.executable, "-m", "node", "route", "--explain", str(folder),
                             "-c", str(REPO / "config.toml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "MATCH route 'mr-brain-t1'" in result.stdout, result.stdout
    assert "brain_extraction_t1" in result.stdout and "brain_structures_t1" in result.stdout
    assert "MRAcquisitionType is '3D'" in result.stdout, result.stdout
    assert "MATCH route 'mr-brain-other'" not in result.stdout, result.stdout


def test_route_explain_sends_a_flair_to_the_contrast_independent_extraction(shared_data,
                                                                          tmp_path):
    flair = load_input(shared_data / "mr_brain_niivue" / "FLAIR.nii.gz")
    write_volume_series(flair, tmp_path / "flair", series_description="AX FLAIR",
                        attributes={"MRAcquisitionType": "2D", "SequenceName": "*tir2d1",
                                    "ScanningSequence": ["SE", "IR"]})
    result = subprocess.run([sys.executable, "-m", "node", "route", "--explain",
                             str(tmp_path / "flair"), "-c", str(REPO / "config.toml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "MATCH route 'mr-brain-other'" in result.stdout, result.stdout
    assert "MATCH route 'mr-brain-t1'" not in result.stdout, result.stdout


@pytest.mark.slow
def test_t1_series_to_brain_results_in_orthanc(node_factory, t1_series, tmp_path):
    node = node_factory(
        {
            "completion": {"series_idle_seconds": 1, "study_idle_seconds": 1,
                           "check_interval_seconds": 0.2},
            "workers": {"models_dir": str(REPO / "models")},
            "results": {"sr_templates_dir": str(REPO / "sr_templates")},
            "sender": {"initial_backoff_seconds": 0.5},
        },
        default_routes(), start=False,
    )
    with Orthanc(tmp_path / "orthanc") as pacs:
        node.add_destination(pacs.aet, pacs.dicom_port)
        node.start()
        storescu(pacs.dicom_port, pacs.aet, t1_series)
        storescu(node.port, "RADNODE", t1_series)
        store = node.store()
        items = node.wait_for(lambda: (i := store.outbox_items()) and len(i) == 4 and
                              all(x.state == "sent" for x in i) and i, timeout=600,
                              interval=1.0)
        jobs = {job.model: job for job in store.jobs()}
        model_of = {job.id: job.model for job in jobs.values()}
        assert set(jobs) == {"brain_extraction_t1", "brain_structures_t1"}
        assert all(job.state == "done" for job in jobs.values()), [j.error for j in jobs.values()]
        in_pacs = set(pacs.sop_instance_uids())
        assert {x.sop_instance_uid for x in items} <= in_pacs

        by_model: dict[str, dict[str, Path]] = {}
        for item in items:
            kind = "seg" if item.sop_class_uid == SEG_CLASS else "sr"
            assert item.sop_class_uid in (SEG_CLASS, SR_CLASS)
            path = download(pacs, item.sop_instance_uid, tmp_path / f"{item.id}.dcm")
            by_model.setdefault(model_of[item.job_id], {})[kind] = path

    assert len(by_model) == 2
    for files in by_model.values():
        validate_set(t1_series, files["seg"], files["sr"])
        seg_ds = pydicom.dcmread(files["seg"])
        refs = {item.ReferencedSOPInstanceUID for series in seg_ds.ReferencedSeriesSequence
                for item in series.ReferencedInstanceSequence}
        assert refs and refs <= in_pacs
        sr_ds = pydicom.dcmread(files["sr"])
        evidence = {item.ReferencedSOPInstanceUID
                    for study in sr_ds.CurrentRequestedProcedureEvidenceSequence
                    for series in study.ReferencedSeriesSequence
                    for item in series.ReferencedSOPSequence}
        assert seg_ds.SOPInstanceUID in evidence and evidence <= in_pacs

    structures = by_model["brain_structures_t1"]
    segments = {s.label for s in read_segmentation(structures["seg"]).segments}
    assert {"Left hippocampus", "Right hippocampus", "Brain stem"} <= segments
    values = {(m.tracking_id, m.name): m for m in read_measurements(structures["sr"])}
    result = jobs["brain_structures_t1"].result
    icv = result["totals"]["Intracranial volume"]["volume_ml"]
    assert 1300 < icv < 1800  # deepbet's TIV of this head: 1545.6 ml
    for side in ("Left hippocampus", "Right hippocampus"):
        volume = next(m for (t, n), m in values.items() if t == side and n == "Volume")
        assert 2.0 < volume.value < 6.0  # ml, an adult hippocampus
        assert abs(volume.value - result["regions"][side]["volume_ml"]) < 1e-3
        percent = next(m for (t, n), m in values.items() if t == side and m.unit == "%")
        assert percent.value == pytest.approx(100 * volume.value / icv, rel=1e-3)
