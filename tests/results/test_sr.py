"""Comprehensive 3D SR (TID 1500): segments, detections, classes, nothing found, LABELMAP."""

from __future__ import annotations

import dataclasses

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset as encode_dataset
from pydicom.sr.codedict import codes
from support.results import (
    BALL_A,
    BALL_B,
    LABELS,
    WHEN,
    ball_case,
    ball_label_map,
    seg_kwargs,
    segmentation_output,
    sr_kwargs,
)
from support.validators import validate_set, validate_sr

from node.inference.output import Box, ModelOutput
from node.measure import (
    class_probabilities,
    find_lesions_in_probability,
    measure_labels,
)
from node.results import (
    LABELMAP_SOP_CLASS,
    ResultsError,
    SRTemplate,
    build_report,
    build_segmentation,
    model_device_uid,
    parse_template,
    read_measurements,
    read_sources,
    write_dataset,
)
from node.results import sr as sr_module
from node.results.segments import segment_tracking_uid

REQUESTS = ["volume", "mean", "std", "min", "max", "max_diameter"]
TEMPLATE = parse_template({
    "procedure_reported": {"value": "25045-6", "scheme": "LN",
                           "meaning": "CT unspecified body region"},
    "segments": {"measurements": ["volume", "mean", "std", "min", "max", "max_diameter"]},
})
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return ball_case(tmp_path_factory.mktemp("balls_sr"))


@pytest.fixture(scope="module")
def segmented(case):
    folder, _paths, volume, sources = case
    label_map = ball_label_map(volume)
    output = segmentation_output(label_map)
    seg = build_segmentation(sources, output, **seg_kwargs())
    measured = measure_labels(volume, label_map, [1, 2], REQUESTS)
    sr = build_report(sources, volume, output, measured, [], [], TEMPLATE, seg, **sr_kwargs())
    return (write_dataset(seg, folder / "seg.dcm"), write_dataset(sr, folder / "sr.dcm"),
            measured)


def _values(records):
    return {(r.tracking_id, r.name, r.derivation): (r.value, r.unit) for r in records}


def test_segment_report_passes_every_validator(case, segmented):
    _, paths, _, _ = case
    seg, sr, _ = segmented
    assert sr.sop_class_uid == COMPREHENSIVE_3D_SR
    validate_set(paths, seg.path, sr.path)


def test_segment_report_round_trips_the_measurements(segmented):
    _, sr, measured = segmented
    records = read_measurements(sr.path)
    values = _values(records)
    assert len(records) == 2 * 6
    for label, name in ((1, "Liver"), (2, "Neoplasm")):
        m = measured[label]
        expected = {
            (name, "Volume", None): (m.volume_ml, "ml"),
            (name, "Attenuation Coefficient", "Mean"): (m.mean, "[hnsf'U]"),
            (name, "Attenuation Coefficient", "Standard Deviation"): (m.std, "[hnsf'U]"),
            (name, "Attenuation Coefficient", "Minimum"): (m.min, "[hnsf'U]"),
            (name, "Attenuation Coefficient", "Maximum"): (m.max, "[hnsf'U]"),
            (name, "Long axis", None): (m.max_diameter_mm, "mm"),
        }
        for key, (value, unit) in expected.items():
            assert values[key][1] == unit
            assert values[key][0] == pytest.approx(value, rel=1e-9, abs=1e-9), key
    # The known balls: 11.49 ml and 2.14 ml, 60 HU and 120 HU, diameters 28 and 16 mm.
    assert values[("Liver", "Volume", None)][0] == pytest.approx(11.49, rel=0.02)
    assert values[("Neoplasm", "Volume", None)][0] == pytest.approx(2.145, rel=0.02)
    assert values[("Liver", "Attenuation Coefficient", "Mean")][0] == pytest.approx(BALL_A[2])
    assert values[("Neoplasm", "Attenuation Coefficient", "Mean")][0] == pytest.approx(BALL_B[2])
    assert values[("Liver", "Long axis", None)][0] == pytest.approx(2 * BALL_A[1], abs=2.0)


def test_segment_groups_reference_the_seg_and_share_its_tracking_uids(case, segmented):
    _, _, _, sources = case
    seg, sr, _ = segmented
    records = read_measurements(sr.path)
    assert {r.tracking_uid for r in records if r.tracking_id == "Liver"} == {
        segment_tracking_uid(seg.sop_instance_uid, 1)}
    ds = pydicom.dcmread(sr.path)
    evidence = {ref.ReferencedSOPInstanceUID
                for study in ds.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence
                for ref in series.ReferencedSOPSequence}
    assert seg.sop_instance_uid in evidence
    assert {str(d.SOPInstanceUID) for d in sources.datasets} <= evidence
    text = _dump(ds)
    assert "Referenced Segment" in text and "Source Series for Segmentation" in text
    assert "Image Library" in text
    assert f"Device Observer UID: {model_device_uid('balls', '1.0.0')}" in text
    assert "Procedure reported: CT unspecified body region" in text
    assert ds.ContentDate == WHEN.strftime("%Y%m%d") and ds.ContentTime == "050607"
    assert (ds.SeriesNumber, ds.CompletionFlag) == (9002, "COMPLETE")


def test_report_is_byte_identical_when_rebuilt(case, segmented, tmp_path):
    _, _, volume, _ = case
    seg_written, sr_written, measured = segmented
    sources = read_sources(volume)
    output = segmentation_output(ball_label_map(volume))
    seg = build_segmentation(sources, output, **seg_kwargs())
    sr = build_report(sources, volume, output, measured, [], [], TEMPLATE, seg, **sr_kwargs())
    assert write_dataset(seg, tmp_path / "seg.dcm").path.read_bytes() == \
        seg_written.path.read_bytes()
    assert write_dataset(sr, tmp_path / "sr.dcm").path.read_bytes() == \
        sr_written.path.read_bytes()


@pytest.mark.parametrize("graphic", ["point", "polygon"])
def test_detections_become_planar_groups_with_scoord3d(case, tmp_path, graphic):
    _, paths, volume, sources = case
    probability = np.where(ball_label_map(volume) > 0, 0.9, 0.05).astype(np.float32)
    probability[ball_label_map(volume) == 2] = 0.7
    lesions = find_lesions_in_probability(volume, probability, 0.5, ["max_diameter"])
    output = ModelOutput("balls_det", "2.0", "detection", LABELS[1:2],
                         label_map=(probability >= 0.5).astype(np.uint8) * 2,
                         probability=probability)
    template = dataclasses.replace(
        TEMPLATE, detections=dataclasses.replace(TEMPLATE.detections, graphic=graphic))
    seg = build_segmentation(sources, output, **seg_kwargs())
    sr = build_report(sources, volume, output, {}, {2: lesions}, [], template, seg,
                      **sr_kwargs())
    seg_w = write_dataset(seg, tmp_path / "seg.dcm")
    sr_w = write_dataset(sr, tmp_path / "sr.dcm")
    validate_set(paths, seg_w.path, sr_w.path)
    values = _values(read_measurements(sr_w.path))
    assert values[("Neoplasm 1", "Certainty of Finding", None)] == (pytest.approx(0.9), "1")
    assert values[("Neoplasm 2", "Certainty of Finding", None)] == (pytest.approx(0.7), "1")
    assert values[("Neoplasm 1", "Long axis", None)][0] == pytest.approx(2 * BALL_A[1], abs=2)
    assert values[("Neoplasm 2", "Volume", None)][0] == pytest.approx(2.145, rel=0.02)
    text = _dump(pydicom.dcmread(sr_w.path))
    assert text.count(f"Graphic Type: {graphic.upper()}") == 2
    assert text.count("Referenced Frame of Reference UID") >= 2


def test_boxes_become_planar_groups(case, tmp_path):
    _, paths, volume, sources = case
    box = Box(label=2, score=0.8, index_min=(10.0, 12.0, 5.0), index_max=(20.0, 25.0, 9.0),
              lps_min=(-44.0, -40.0, 10.0), lps_max=(-24.0, -14.0, 18.0))
    output = ModelOutput("boxes", "1", "detection", LABELS[1:2], boxes=(box,))
    template = dataclasses.replace(
        TEMPLATE, detections=dataclasses.replace(TEMPLATE.detections, graphic="polygon"))
    sr = build_report(sources, volume, output, {}, [], [], template, None, **sr_kwargs())
    written = write_dataset(sr, tmp_path / "sr.dcm")
    validate_sr(written.path, paths)
    values = _values(read_measurements(written.path))
    assert values[("Neoplasm 1", "Certainty of Finding", None)][0] == pytest.approx(0.8)
    assert values[("Neoplasm 1", "Long axis", None)][0] == pytest.approx(
        float(np.linalg.norm([20.0, 26.0, 8.0])))


def test_classifications_become_tid1501_groups(case, tmp_path):
    _, paths, volume, sources = case
    output = ModelOutput("classes", "3.1", "classification", LABELS,
                         class_probabilities={1: 0.85, 2: 0.1, 3: 0.5})
    classes = class_probabilities([lab.name for lab in LABELS], [0.85, 0.1, 0.5], 0.5)
    sr = build_report(sources, volume, output, {}, [], classes, TEMPLATE, None, **sr_kwargs())
    written = write_dataset(sr, tmp_path / "sr.dcm")
    validate_sr(written.path, paths)
    values = _values(read_measurements(written.path))
    assert {k[0]: v for k, v in values.items()} == {
        "Liver": (pytest.approx(0.85), "1"), "Neoplasm": (pytest.approx(0.1), "1"),
        "Spleen": (pytest.approx(0.5), "1")}
    text = _dump(pydicom.dcmread(written.path))
    assert text.count("Liver: Present") == 1
    assert text.count("Neoplasm: Absent") == 1
    assert text.count("Spleen: Present") == 1  # 0.5 >= threshold 0.5


def test_nothing_found_gives_a_valid_report_saying_absent(case, tmp_path):
    _, paths, volume, sources = case
    output = segmentation_output(np.zeros(volume.array.shape, dtype=np.uint8))
    template = parse_template({"segments": {"labels": [1, 2]}})
    sr = build_report(sources, volume, output, {}, [], [], template, None, **sr_kwargs())
    written = write_dataset(sr, tmp_path / "sr.dcm")
    validate_sr(written.path, paths)
    assert read_measurements(written.path) == []
    text = _dump(pydicom.dcmread(written.path))
    assert text.count("Liver: Absent") == 1 and text.count("Neoplasm: Absent") == 1
    assert "Spleen" not in text  # not a label the template reports


def test_report_on_a_labelmap_seg_uses_tid1501_groups_and_validates(case, tmp_path):
    _, paths, volume, sources = case
    label_map = ball_label_map(volume)
    output = segmentation_output(label_map)
    seg = build_segmentation(sources, output, **seg_kwargs(), seg_type="labelmap")
    assert seg.SOPClassUID == LABELMAP_SOP_CLASS
    measured = measure_labels(volume, label_map, [1, 2], REQUESTS)
    sr = build_report(sources, volume, output, measured, [], [], TEMPLATE, seg, **sr_kwargs())
    seg_w = write_dataset(seg, tmp_path / "seg.dcm")
    sr_w = write_dataset(sr, tmp_path / "sr.dcm")
    validate_set(paths, seg_w.path, sr_w.path)
    ds = pydicom.dcmread(sr_w.path)
    text = _dump(ds)
    assert "Referenced Segment" not in text
    records = read_measurements(sr_w.path)
    assert _values(records)[("Liver", "Volume", None)][0] == pytest.approx(measured[1].volume_ml)
    assert {r.tracking_uid for r in records if r.tracking_id == "Neoplasm"} == {
        segment_tracking_uid(seg_w.sop_instance_uid, 2)}
    # Source images of a group: the slices of the label's bounding box.
    (_, _, k0), (_, _, k1) = measured[2].bbox_index
    assert text.count("Source of Measurement") == (k1 - k0 + 1) + (
        measured[1].bbox_index[1][2] - measured[1].bbox_index[0][2] + 1)


def test_local_coding_schemes_are_identified(case, tmp_path):
    _, paths, volume, sources = case
    label_map = ball_label_map(volume)
    template = parse_template({
        "coding_schemes": {"99TEST": "test codes"},
        "segments": {"measurements": ["volume", "p90"]},
        "measurements": {"p90": {
            "concept": {"value": "P90", "scheme": "99TEST", "meaning": "90th percentile HU"},
            "unit": "intensity"}},
    })
    measured = measure_labels(volume, label_map, [1, 2],
                              ["volume", {"kind": "percentile", "q": 90, "name": "p90"}])
    output = segmentation_output(label_map)
    seg = build_segmentation(sources, output, **seg_kwargs())
    sr = build_report(sources, volume, output, measured, [], [], template, seg, **sr_kwargs())
    assert [(i.CodingSchemeDesignator, i.CodingSchemeName)
            for i in sr.CodingSchemeIdentificationSequence if i.CodingSchemeDesignator
            == "99TEST"] == [("99TEST", "test codes")]
    seg_w, sr_w = write_dataset(seg, tmp_path / "s.dcm"), write_dataset(sr, tmp_path / "r.dcm")
    validate_sr(sr_w.path, paths, seg_w.path)
    values = _values(read_measurements(sr_w.path))
    assert values[("Liver", "90th percentile HU", None)] == (
        pytest.approx(measured[1].value("p90")), "[hnsf'U]")


def test_builtin_attenuation_code_is_refused_outside_ct(case):
    _, _, volume, sources = case
    mr = dataclasses.replace(volume, modality="MR")
    label_map = ball_label_map(volume)
    measured = measure_labels(volume, label_map, [1, 2], REQUESTS)
    output = segmentation_output(label_map)
    seg = build_segmentation(sources, output, **seg_kwargs())
    with pytest.raises(ResultsError, match=r"'mean'.*is for CT, this is MR"):
        build_report(sources, mr, output, measured, [], [], TEMPLATE, seg, **sr_kwargs())
    ok = SRTemplate(name="t", segments=dataclasses.replace(TEMPLATE.segments,
                                                           measurements=("volume",)))
    sr = build_report(sources, mr, output, measured, [], [], ok, seg, **sr_kwargs())
    assert sr.SOPInstanceUID == "2.25.2001"


def _dump(ds: pydicom.Dataset) -> str:
    """The content tree as 'Concept: value' lines (codes by meaning), for assertions."""
    lines: list[str] = []

    def walk(items):
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" \
                in item else ""
            if "ConceptCodeSequence" in item:
                lines.append(f"{name}: {item.ConceptCodeSequence[0].CodeMeaning}")
            elif "UID" in item:
                lines.append(f"{name}: {item.UID}")
            else:
                lines.append(name)
            if "GraphicType" in item:
                lines.append(f"Graphic Type: {item.GraphicType}")
            if "ReferencedFrameOfReferenceUID" in item:
                lines.append("Referenced Frame of Reference UID")
            walk(item.get("ContentSequence", []))

    walk(ds.ContentSequence)
    return "\n".join(lines)


def test_image_library_lists_every_source_once_with_shared_descriptors(case, segmented):
    _, _, _, sources = case
    _, sr, _ = segmented
    ds = pydicom.dcmread(sr.path)
    library = next(i for i in ds.ContentSequence
                   if i.ConceptNameCodeSequence[0].CodeMeaning == "Image Library")
    group = library.ContentSequence[0]
    images = [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
              for i in group.ContentSequence if i.ValueType == "IMAGE"]
    assert images == [str(d.SOPInstanceUID) for d in sources.datasets]
    shared = {i.ConceptNameCodeSequence[0].CodeMeaning for i in group.ContentSequence
              if i.ValueType != "IMAGE"}
    assert {"Modality", "Frame of Reference UID", "Pixel Data Rows", "Slice Thickness"} <= shared
    assert not any(m.startswith("Image Position") for m in shared)


def test_nothing_to_report_is_an_error_not_an_empty_report(case):
    _, _, volume, sources = case
    output = segmentation_output(np.zeros(volume.array.shape, dtype=np.uint8))
    template = parse_template({"report_absent": False})
    with pytest.raises(ResultsError, match="nothing to report"):
        build_report(sources, volume, output, {}, [], [], template, None, **sr_kwargs())



def _encoded(item: pydicom.Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    encode_dataset(fp, item)
    return fp.getvalue()


def _item_types(items) -> list[str]:
    out = []
    for item in items:
        out.append(type(item).__name__)
        out += _item_types(item.get("ContentSequence", []))
    return out


def test_library_added_after_construction_is_what_highdicom_makes_of_it(case, segmented,
                                                                        monkeypatch):
    """build_report adds the image library once the SR is built (it spares highdicom a deep
    copy and an evidence search of 300 items): the file, the evidence and ``sr.content`` are
    what highdicom makes of a report that holds the library from the start."""
    _, _, volume, sources = case
    seg = pydicom.dcmread(segmented[0].path)
    output = segmentation_output(ball_label_map(volume))
    measured = measure_labels(volume, output.label_map, [1, 2], REQUESTS)
    args = (sources, volume, output, measured, [], [], TEMPLATE, seg)
    ours = build_report(*args, **sr_kwargs())

    constructor = hd.sr.Comprehensive3DSR

    def given_the_library(*, content, **kwargs):
        items = content[0].ContentSequence
        at = next(n for n, i in enumerate(items) if i.name == codes.DCM.ImagingMeasurements)
        items.insert(at, sr_module._image_library(sources.datasets))
        return constructor(content=content, **kwargs)

    monkeypatch.setattr(hd.sr, "Comprehensive3DSR", given_the_library)
    monkeypatch.setattr(sr_module, "_insert_image_library", lambda sr, library: None)
    reference = build_report(*args, **sr_kwargs())

    assert len(sources.datasets) > 1
    assert "Image Library" in [i.name.meaning for i in reference.content[0].ContentSequence]
    assert _encoded(ours) == _encoded(reference)
    assert (ours.CurrentRequestedProcedureEvidenceSequence
            == reference.CurrentRequestedProcedureEvidenceSequence)
    assert _encoded(ours.content[0]) == _encoded(reference.content[0])
    assert _item_types(ours.content) == _item_types(reference.content)
