"""The SR says when a finding's measurements cover only part of it: cut by the field of view,
or flagged by the model ([[flags]]); the report still passes every validator."""

from __future__ import annotations

import dataclasses
import tomllib

import pydicom
import pytest
from support.onnx_models import header, label
from support.results import ball_case, ball_label_map, seg_kwargs, segmentation_output, sr_kwargs
from support.validators import validate_set

from node.inference.manifest import Code, parse_manifest
from node.inference.output import RaisedFlag
from node.measure import measure_labels
from node.results import (
    ResultsError,
    build_report,
    build_segmentation,
    parse_template,
    write_dataset,
)

TEMPLATE = parse_template({"segments": {"labels": [1, 2, 3], "measurements": ["volume"]}})
CUT = "Quality Finding: Anatomy coverage incomplete"
UNDECIDED = "Quality Finding: Region partly undecided by the algorithm"


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return ball_case(tmp_path_factory.mktemp("caveats"))


def _outputs(volume, flags):
    """Balls 1 and 2 inside the field of view, and label 3 (Spleen) on the first slice."""
    label_map = ball_label_map(volume)
    label_map[0, 20:30, 20:30] = 3
    output = dataclasses.replace(segmentation_output(label_map), flags=flags)
    measured = measure_labels(volume, label_map, [1, 2, 3], ["volume"])
    assert [measured[v].truncated_at for v in (1, 2, 3)] == [(), (), ("inferior",)]
    return output, measured


def _groups(ds: pydicom.Dataset) -> dict[str, list[str]]:
    """Per measurement group (by tracking identifier), its 'name: value' CODE items."""
    out: dict[str, list[str]] = {}
    for container in ds.ContentSequence:
        for group in container.get("ContentSequence", []):
            items = group.get("ContentSequence", [])
            tracking = next((i.TextValue for i in items if i.ValueType == "TEXT"
                             and i.ConceptNameCodeSequence[0].CodeValue == "112039"), None)
            if tracking is None:
                continue
            out[tracking] = [f"{i.ConceptNameCodeSequence[0].CodeMeaning}: "
                             f"{i.ConceptCodeSequence[0].CodeMeaning}"
                             for i in items if i.ValueType == "CODE"]
    return out


@pytest.mark.parametrize("seg_type", ["binary", "labelmap"])
def test_truncated_and_flagged_segments_say_so_and_validate(case, tmp_path, seg_type):
    _, paths, volume, sources = case
    output, measured = _outputs(volume, (RaisedFlag(2, "Undecided field of view", 5, 0.04),))
    seg = build_segmentation(sources, output, **seg_kwargs(), seg_type=seg_type)
    sr = build_report(sources, volume, output, measured, [], [], TEMPLATE, seg, **sr_kwargs())
    seg_w = write_dataset(seg, tmp_path / "seg.dcm")
    sr_w = write_dataset(sr, tmp_path / "sr.dcm")
    validate_set(paths, seg_w.path, sr_w.path)
    ds = pydicom.dcmread(sr_w.path)
    groups = _groups(ds)
    assert CUT in groups["Spleen"] and UNDECIDED not in groups["Spleen"]
    assert UNDECIDED in groups["Neoplasm"] and CUT not in groups["Neoplasm"]
    assert CUT not in groups["Liver"] and UNDECIDED not in groups["Liver"]
    # The node's own local code is identified, though the template declares no scheme.
    assert [(i.CodingSchemeDesignator, i.CodingSchemeName)
            for i in ds.CodingSchemeIdentificationSequence
            if i.CodingSchemeDesignator.startswith("99")] == [("99RADNODE",
                                                                "radnode local codes")]


def test_a_report_without_caveats_declares_no_local_scheme(case):
    _, _, volume, sources = case
    label_map = ball_label_map(volume)
    output = segmentation_output(label_map)
    measured = measure_labels(volume, label_map, [1, 2], ["volume"])
    seg = build_segmentation(sources, output, **seg_kwargs())
    sr = build_report(sources, volume, output, measured, [], [], TEMPLATE, seg, **sr_kwargs())
    assert not any(i.CodingSchemeDesignator.startswith("99")
                   for i in sr.get("CodingSchemeIdentificationSequence", []))
    assert all(CUT not in codes and UNDECIDED not in codes for codes in _groups(sr).values())


def test_a_flag_concept_in_another_local_scheme_must_be_declared(case, tmp_path):
    _, paths, volume, sources = case
    concept = Code("EDGE", "99SITE", "Touches the scanner table")
    output, measured = _outputs(volume, (RaisedFlag(1, "Table", 3, 0.02, concept),))
    seg = build_segmentation(sources, output, **seg_kwargs())
    with pytest.raises(ResultsError, match=r"'99SITE'.*declare it in \[coding_schemes\]"):
        build_report(sources, volume, output, measured, [], [], TEMPLATE, seg, **sr_kwargs())
    declared = parse_template({"coding_schemes": {"99SITE": "site codes"},
                               "segments": {"measurements": ["volume"]}})
    sr = build_report(sources, volume, output, measured, [], [], declared, seg, **sr_kwargs())
    seg_w = write_dataset(seg, tmp_path / "seg.dcm")
    sr_w = write_dataset(sr, tmp_path / "sr.dcm")
    validate_set(paths, seg_w.path, sr_w.path)
    assert "Quality Finding: Touches the scanner table" in _groups(sr)["Liver"]
    assert [i.CodingSchemeDesignator for i in sr.CodingSchemeIdentificationSequence
            if i.CodingSchemeDesignator.startswith("99")] == ["99SITE"]


def test_template_check_wants_a_flag_scheme_declared():
    text = header("m", activation="labelmap", dtype="uint8") + label(1, "a") + """
    [[flags]]
    output = "undecided"
    name = "Table"
    concept = { value = "EDGE", scheme = "99SITE", meaning = "Touches the scanner table" }
    """
    manifest = parse_manifest(tomllib.loads("\n".join(x.strip() for x in text.splitlines())))
    segments = {"measurements": ["volume"]}
    assert parse_template({"segments": segments}).check_manifest(manifest) == [
        "coding_schemes: local scheme '99SITE' of the manifest's flags[0].concept is not "
        "declared"]
    assert parse_template({"coding_schemes": {"99SITE": "site"},
                           "segments": segments}).check_manifest(manifest) == []
