"""Output kinds are plug-ins: a throw-away kind, registered in a test, is written beside the SEG
and SR by the one pipeline, validated, queued from the job's DICOM files and sent to a real
DCMTK storescp; the registry's order and the UID derivation are checked too."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from support.results import WHEN
from support.sender import StoreSCP, make_config
from support.validators import dciodvfy

from node.config import ResultsConfig, build_config
from node.inference import load_package
from node.pipeline import run_pipeline
from node.results import (
    FinishedJob,
    ResultsError,
    SharedHeader,
    kind_uids,
    register_writer,
    result_kinds,
    result_uids,
    unregister_writer,
    writers,
)
from node.results.objects import ResultSettings
from node.results.uids import KindUids
from node.sender import Sender, outbox_rows
from node.sender.outbox import _class_name
from node.store import open_store
from node.synthetic import SeriesGeometry, chest_phantom, write_series

REPO = Path(__file__).resolve().parents[2]
KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
SMALL_CHEST = SeriesGeometry(rows=96, columns=96, slices=30, pixel_spacing=(4.0, 4.0),
                             slice_spacing=4.0, origin=(-190.5, -190.5, 0.0))


class KeyImagesWriter:
    """A throw-away kind: a Key Object Selection of every source image (highdicom), made from
    the shared header and the kind's derived UIDs only."""

    kind = "kos"
    sop_classes: Mapping[str, str] = {KOS_CLASS: "Key Object Selection Document Storage"}
    after: tuple[str, ...] = ("seg",)  # registered after the SEG (it only says so here)
    series_number = 9099

    def __init__(self) -> None:
        self.seen: list[tuple[set[str], SharedHeader]] = []

    def wants(self, job: FinishedJob, results: ResultsConfig) -> bool:
        return job.output.kind != "classification"

    def build(self, job: FinishedJob, header: SharedHeader, uids: KindUids,
              results: ResultsConfig) -> Dataset | None:
        self.seen.append((set(job.built), header))  # the kinds built before it
        sources = list(header.sources.datasets)
        content = hd.ko.KeyObjectSelection(document_title=codes.DCM.OfInterest,
                                           referenced_objects=sources)
        kos = hd.ko.KeyObjectSelectionDocument(
            evidence=sources, content=content, series_instance_uid=uids.series,
            series_number=header.series_number, sop_instance_uid=uids.instance,
            instance_number=1, manufacturer=header.manufacturer,
            institution_name=header.institution_name or None,
        )
        kos.SeriesDescription = header.series_description[:64]
        kos.ContentDate = header.content_datetime.strftime("%Y%m%d")
        kos.ContentTime = header.content_datetime.strftime("%H%M%S")
        return kos


@pytest.fixture
def key_images() -> Iterator[KeyImagesWriter]:
    writer = KeyImagesWriter()
    register_writer(writer)
    try:
        yield writer
    finally:
        unregister_writer("kos")
    assert result_kinds() == ("seg", "sr")


def test_the_built_in_kinds_are_seg_then_sr() -> None:
    assert result_kinds() == ("seg", "sr")
    assert [w.kind for w in writers()] == ["seg", "sr"]
    assert writers()[1].after == ("seg",)


def test_kind_uids_are_the_uids_the_node_always_derived() -> None:
    old = result_uids("1.2.3.4", "lung_ct", "1.1.0", 2, "1.2.826.0.1.")
    assert kind_uids("seg", "1.2.3.4", "lung_ct", "1.1.0", 2, "1.2.826.0.1.") == (
        old.seg_series, old.seg_instance)
    assert kind_uids("sr", "1.2.3.4", "lung_ct", "1.1.0", 2, "1.2.826.0.1.") == (
        old.sr_series, old.sr_instance)
    other = kind_uids("kos", "1.2.3.4", "lung_ct", "1.1.0", 2, "1.2.826.0.1.")
    assert len({*old, *other}) == 6


def test_the_registry_keeps_an_explicit_order(key_images: KeyImagesWriter) -> None:
    with pytest.raises(ResultsError, match="registered already"):
        register_writer(KeyImagesWriter())
    late = KeyImagesWriter()
    late.kind, late.after = "late", ("nothing",)
    with pytest.raises(ResultsError, match="register those first"):
        register_writer(late)
    with pytest.raises(ResultsError, match="is read by"):
        unregister_writer("seg")
    assert result_kinds() == ("seg", "sr", "kos")


def test_a_registered_kind_is_written_and_sent(tmp_path: Path,
                                               key_images: KeyImagesWriter) -> None:
    paths = write_series(tmp_path / "ct", SMALL_CHEST, chest_phantom)
    config = build_config({"results": {"institution_name": "Test Hospital"}}, REPO)
    settings = ResultSettings(config.results, config.output, REPO / "sr_templates", WHEN, 2)
    result = run_pipeline(paths, load_package(REPO / "models" / "lung_ct"), tmp_path / "out",
                          results=settings)

    assert list(result.files) == ["labels", "seg", "sr", "kos"]
    assert result.dicom_files() == [tmp_path / "out" / f"{k}.dcm" for k in ("seg", "sr", "kos")]
    kos = pydicom.dcmread(result.files["kos"])
    source = pydicom.dcmread(paths[0], stop_before_pixels=True)
    expected = kind_uids("kos", str(source.SeriesInstanceUID), "lung_ct",
                         result.version, 2)
    assert (kos.SeriesInstanceUID, kos.SOPInstanceUID) == expected
    assert kos.SOPClassUID == KOS_CLASS
    assert kos.SeriesNumber == 9099  # no [results.kos] table: the writer's own number
    assert kos.SeriesDescription == "radnode lung_ct KOS"
    assert kos.StudyInstanceUID == source.StudyInstanceUID
    assert kos.PatientID == source.PatientID
    assert kos.InstitutionName == "Test Hospital"
    assert kos.ContentDate == "20260304"
    ((built, header),) = key_images.seen
    assert built == {"seg", "sr"}
    assert header.device.model == "lung_ct" and header.content_datetime == WHEN
    assert header.study_instance_uid == str(source.StudyInstanceUID)
    dciodvfy(result.files["kos"])  # fails on any error
    assert _class_name(KOS_CLASS) == "Key Object Selection Document Storage"

    peer = StoreSCP(tmp_path / "peer").start()
    try:
        sender_config = make_config(tmp_path, [{
            "name": "pacs", "kind": "dicom", "ae_title": "PEER", "host": "127.0.0.1",
            "port": peer.port}])
        store = open_store(tmp_path / "data" / "radnode.db")
        try:
            t0 = time.time()
            store.enqueue(outbox_rows(["pacs"], result.dicom_files(), tmp_path / "data"),
                          now=t0)
            summary = Sender(sender_config, store).run_once(t0)
        finally:
            store.close()
        assert (summary.sent, summary.failed, summary.dead) == (3, 0, 0)
        sent = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
                for p in result.dicom_files()]
        assert peer.received() == sorted(sent)
    finally:
        peer.stop()
