"""Brain structures: split (left/right) labels, totals and percent of intracranial volume.

A small synthetic MR head with a hand-made label map: hippocampi and amygdalae split into left
and right (SCT Left/Right laterality), a brain stem under its reported value, one structure
absent, the intracranial volume from the brain mask of the model run before, and a total brain
volume. SEG + SR are written by write_result_objects with the shipped brain_structures_t1
template, validated, and read back.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from support.results import WHEN
from support.validators import dciodvfy, validate_set

from node.config import OutputConfig, ResultsConfig
from node.imaging import load_series
from node.inference.manifest import (
    LEFT,
    RIGHT,
    Code,
    LabelSpec,
    Total,
    load_package,
    parse_manifest,
)
from node.inference.output import ModelOutput
from node.pipeline import measure, measure_totals
from node.results import LabelFinding, load_template, read_measurements
from node.results.objects import ResultSettings, write_result_objects
from node.results.segments import segment_tracking_uid
from node.synthetic import SeriesGeometry, ellipsoid, write_series

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "sr_templates"
ANATOMY = Code("91723000", "SCT", "Anatomical Structure")
HIPPOCAMPUS = Code("5366008", "SCT", "Hippocampus")
AMYGDALA = Code("4958002", "SCT", "Amygdala")
BRAIN_STEM = Code("119238007", "SCT", "Brain Stem")
CRANIAL_CAVITY = Code("1101003", "SCT", "Cranial Cavity")
BRAIN = Code("12738006", "SCT", "Brain")
LATERALITY = Code("272741003", "SCT", "Laterality")

# What Manifest.reported_labels gives for the manifest below, made by hand.
REPORTED = (
    LabelSpec(17, "Left hippocampus", 1, ANATOMY, HIPPOCAMPUS, (220, 216, 20), laterality=LEFT),
    LabelSpec(53, "Right hippocampus", 1, ANATOMY, HIPPOCAMPUS, (220, 216, 20), laterality=RIGHT),
    LabelSpec(18, "Left amygdala", 2, ANATOMY, AMYGDALA, (103, 255, 255), laterality=LEFT),
    LabelSpec(54, "Right amygdala", 2, ANATOMY, AMYGDALA, (103, 255, 255), laterality=RIGHT),
    LabelSpec(16, "Brain stem", 3, ANATOMY, BRAIN_STEM, (119, 159, 176)),
)
TOTALS = (
    Total("Intracranial volume", (), True, CRANIAL_CAVITY),
    Total("Total brain volume", (17, 53, 18, 54, 16), False, BRAIN),
)


def _code(c: Code) -> dict[str, str]:
    return {"value": c.value, "scheme": c.scheme, "meaning": c.meaning}


MANIFEST = {
    "name": "brain_synth", "version": "0.1.0", "description": "synthetic brain structures",
    "licence": "MIT", "intended_use": "tests", "for_clinical_use": False,
    "sr_template": "brain_structures_t1", "after": "brain_mask",
    "accepts": {"modality": ["MR"]},
    "input": {"name": "input", "layout": "NCDHW"},
    "output": {"name": "logits", "kind": "segmentation"},
    "labels": [
        {"value": 1, "name": "Hippocampus", "type": _code(HIPPOCAMPUS),
         "category": _code(ANATOMY), "colour": [220, 216, 20], "split": {"left": 17, "right": 53}},
        {"value": 2, "name": "Amygdala", "type": _code(AMYGDALA), "category": _code(ANATOMY),
         "colour": [103, 255, 255], "split": {"left": 18, "right": 54}},
        {"value": 3, "name": "Brain stem", "type": _code(BRAIN_STEM), "category": _code(ANATOMY),
         "colour": [119, 159, 176], "reported_value": 16},
    ],
    "totals": [
        {"name": "Intracranial volume", "from_after": True, "type": _code(CRANIAL_CAVITY)},
        {"name": "Total brain volume", "labels": [17, 53, 18, 54, 16], "type": _code(BRAIN)},
    ],
    "measurements": [
        {"kind": "volume"},
        {"kind": "volume_percent", "of": "Intracranial volume", "name": "percent_icv"},
    ],
}

HEAD = SeriesGeometry(rows=48, columns=48, slices=20, pixel_spacing=(3.0, 3.0),
                      slice_spacing=3.0, origin=(-70.5, -70.5, 0.0))
CENTRE_Z = 28.5
# In LPS, +x is the patient's left: the left structures lie at x > 0.
STRUCTURES = (  # (value, centre, radii)
    (17, (30.0, 0.0, CENTRE_Z), (9.0, 15.0, 9.0)),
    (53, (-30.0, 0.0, CENTRE_Z), (9.0, 15.0, 9.0)),
    (54, (-27.0, -24.0, CENTRE_Z), (7.0, 7.0, 7.0)),  # the left amygdala (18) is absent
    (16, (0.0, 12.0, CENTRE_Z), (8.0, 8.0, 15.0)),
)
BRAIN_RADII = (60.0, 60.0, 26.0)


def _field_map(geometry: SeriesGeometry, field) -> np.ndarray:
    return np.stack([field(*geometry.slice_coordinates(k)) for k in range(geometry.slices)])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("brain")
    head = ellipsoid((0.0, 0.0, CENTRE_Z), (66.0, 66.0, 28.0), 300.0, background=0.0)
    paths = write_series(folder / "mr", HEAD, head, modality="MR",
                         study_uid="1.2.826.0.1.3680043.10.2.1",
                         series_uid="1.2.826.0.1.3680043.10.2.2", rescale_intercept=0.0)
    volume = load_series(paths)
    labels_field = ellipsoid((0.0, 0.0, CENTRE_Z), BRAIN_RADII, 0.0, background=0.0)
    for value, centre, radii in STRUCTURES:
        labels_field = ellipsoid(centre, radii, float(value), background=labels_field)
    label_map = _field_map(HEAD, labels_field).astype(np.uint8)
    mask = _field_map(HEAD, ellipsoid((0.0, 0.0, CENTRE_Z), BRAIN_RADII, 1.0, 0.0))
    manifest = parse_manifest(MANIFEST)
    brain = LabelSpec(1, "Brain", None, ANATOMY, BRAIN, (250, 250, 225))
    after = ModelOutput("brain_mask", "1.0.0", "segmentation", (brain,),
                        label_map=mask.astype(np.uint8))
    output = ModelOutput("brain_synth", "0.1.0", "segmentation", REPORTED,
                         label_map=label_map, after=after)
    totals = measure_totals(volume, output, manifest.totals)
    regions, _, _ = measure(volume, output, manifest.measurements,
                            {name: m.volume_ml for name, m in totals.items()})
    settings = ResultSettings(ResultsConfig(), OutputConfig(), TEMPLATES, WHEN)
    files = write_result_objects(volume, manifest, output, regions, [], [], settings,
                                 folder / "out", totals=totals)
    return paths, manifest, label_map, regions, totals, files


def test_the_manifest_reports_the_hand_made_labels(run):
    _, manifest, _, _, _, _ = run
    assert manifest.reported_labels == REPORTED
    assert manifest.totals == TOTALS


def test_seg_and_sr_pass_every_validator(run):
    paths, _, _, _, _, files = run
    validate_set(paths, files["seg"], files["sr"])


def test_seg_segments_of_split_labels_carry_their_laterality(run):
    _, _, _, _, _, files = run
    ds = pydicom.dcmread(files["seg"])
    got = {}
    for item in ds.SegmentSequence:
        prop = item.SegmentedPropertyTypeCodeSequence[0]
        modifiers = prop.get("SegmentedPropertyTypeModifierCodeSequence", [])
        got[item.SegmentLabel] = (prop.CodeValue,
                                  tuple((m.CodeValue, m.CodingSchemeDesignator, m.CodeMeaning)
                                        for m in modifiers))
    assert got == {
        "Left hippocampus": ("5366008", (("7771000", "SCT", "Left"),)),
        "Right hippocampus": ("5366008", (("24028007", "SCT", "Right"),)),
        "Right amygdala": ("4958002", (("24028007", "SCT", "Right"),)),
        "Brain stem": ("119238007", ()),
    }
    # dciodvfy knows the modifier where it is (nested in the property type item): misplaced,
    # it would warn "Attribute is not present in standard DICOM IOD".
    assert not [w for w in dciodvfy(files["seg"]) if "not present in standard" in w]
    # highdicom reads it back as the segment's property type, modifier and all.
    seg = hd.seg.segread(files["seg"])
    desc = seg.get_segment_description(1)
    assert desc.segment_label == "Brain stem"  # segments follow the label values: 16, 17, 53, 54
    modifier = seg.get_segment_description(2).segmented_property_type \
        .SegmentedPropertyTypeModifierCodeSequence[0]
    assert (modifier.CodeValue, modifier.CodeMeaning) == ("7771000", "Left")


def _groups(path: Path):
    sr = hd.sr.srread(path)
    report = sr.content
    return (report.get_volumetric_roi_measurement_groups(),
            report.get_image_measurement_groups())


def _laterality(site: hd.sr.FindingSite) -> tuple[str, str] | None:
    for item in site.ContentSequence if "ContentSequence" in site else []:
        concept = item.ConceptNameCodeSequence[0]
        if (concept.CodeValue, concept.CodingSchemeDesignator) == (LATERALITY.value, "SCT"):
            code = item.ConceptCodeSequence[0]
            return code.CodeValue, code.CodeMeaning
    return None


def test_structure_groups_reference_their_segments_with_lateral_sites(run):
    _, _, _, _, _, files = run
    seg = pydicom.dcmread(files["seg"])
    numbers = {item.SegmentLabel: item.SegmentNumber for item in seg.SegmentSequence}
    volumetric, _ = _groups(files["sr"])
    by_name = {g.tracking_identifier: g for g in volumetric}
    assert set(by_name) == {"Left hippocampus", "Right hippocampus", "Right amygdala",
                            "Brain stem"}
    expected_sides = {"Left hippocampus": ("7771000", "Left"),
                      "Right hippocampus": ("24028007", "Right"),
                      "Right amygdala": ("24028007", "Right"), "Brain stem": None}
    for name, group in by_name.items():
        label = next(lab for lab in REPORTED if lab.name == name)
        segment = group.referenced_segment
        assert segment.referenced_sop_instance_uid == str(seg.SOPInstanceUID)
        assert segment.referenced_segment_numbers == [numbers[name]]
        assert group.tracking_uid == segment_tracking_uid(str(seg.SOPInstanceUID), label.value)
        assert group.finding_type.value == label.type.value
        sites = group.finding_sites
        if expected_sides[name] is None:
            assert not sites
        else:
            (site,) = sites
            assert site.value.value == label.type.value  # the structure, with its side
            assert _laterality(site) == expected_sides[name]


def test_percent_icv_is_reported_in_percent(run):
    _, _, _, regions, totals, files = run
    icv = totals["Intracranial volume"].volume_ml
    records = read_measurements(files["sr"])
    got = {(r.tracking_id, r.concept.value): (r.value, r.unit, r.concept) for r in records}
    for lab in REPORTED:
        if lab.value == 18:
            continue  # absent: no volumetric group
        region = regions[lab.value]
        value, unit, concept = got[(lab.name, "ICVPCT")]
        assert (unit, concept.scheme, concept.meaning) == (
            "%", "99RADNODE", "Percent of intracranial volume")
        assert value == pytest.approx(100.0 * region.volume_ml / icv, rel=1e-9)
        assert value == pytest.approx(region.value("percent_icv"), rel=1e-9)
        assert got[(lab.name, "118565006")][:2] == (pytest.approx(region.volume_ml), "ml")
    ds = pydicom.dcmread(files["sr"])
    schemes = {item.CodingSchemeDesignator for item in ds.CodingSchemeIdentificationSequence}
    assert "99RADNODE" in schemes


def test_totals_are_tid1501_groups_with_their_volumes(run):
    _, _, _, regions, totals, files = run
    _, image_groups = _groups(files["sr"])
    by_name = {g.tracking_identifier: g for g in image_groups}
    assert {"Intracranial volume", "Total brain volume"} <= set(by_name)
    for total in TOTALS:
        group = by_name[total.name]
        assert group.finding_type.value == total.type.value
        assert [s.value.value for s in group.finding_sites] == [total.type.value]
        (volume,) = [m for m in group.get_measurements() if m.name.value == "118565006"]
        assert volume.value == pytest.approx(totals[total.name].volume_ml, rel=1e-6)
        assert volume.unit.value == "ml"
    structures = sum(regions[v].volume_ml for v in (17, 53, 54, 16))
    assert totals["Total brain volume"].volume_ml == pytest.approx(structures)
    # The brain mask: an ellipsoid of 60 x 60 x 26 mm radii (~392 ml) on a 3 mm grid.
    assert totals["Intracranial volume"].volume_ml == pytest.approx(
        4 / 3 * np.pi * 60 * 60 * 26 / 1000, rel=0.05)


def test_absent_split_label_says_absent_with_its_side(run):
    _, _, _, _, _, files = run
    _, image_groups = _groups(files["sr"])
    (group,) = [g for g in image_groups if g.tracking_identifier == "Left amygdala"]
    evaluations = {(e.name.value, e.value.value) for e in group.get_qualitative_evaluations()}
    assert (AMYGDALA.value, "272519000") in evaluations  # "Amygdala" = Absent
    (site,) = group.finding_sites
    assert _laterality(site) == ("7771000", "Left")


def test_brain_structures_template_fits_its_manifest():
    manifest = load_package(REPO / "models" / "brain_structures_t1").manifest
    template = load_template(manifest.sr_template, TEMPLATES)
    assert template.check_manifest(manifest) == []
    assert [c.value for c in template.procedure_reported] == ["24590-2"]
    assert template.segments.measurements == ("volume", "percent_icv")
    assert template.totals.names == ("Intracranial volume", "Total brain volume")
    pct = template.measurement("percent_icv")
    assert (pct.concept.value, pct.concept.scheme, pct.unit.value) == ("ICVPCT", "99RADNODE",
                                                                       "%")
    reported = {lab.value: lab for lab in manifest.reported_labels}
    finding = template.finding(reported[53])
    assert (finding.finding_type, finding.finding_site, finding.laterality) == (
        HIPPOCAMPUS, HIPPOCAMPUS, RIGHT)
    third = reported[14]  # the third ventricle under its reported value: no side, no site
    assert third.name == "Third ventricle"
    assert template.finding(third) == LabelFinding(third.type)


def test_brain_extraction_template_fits_its_manifest():
    package = REPO / "models" / "brain_extraction_t1"
    template = load_template("brain_extraction_t1", TEMPLATES)
    assert template.segments.labels == (1,) and template.segments.measurements == ("volume",)
    if not (package / "model.toml").is_file():
        pytest.skip("models/brain_extraction_t1/model.toml is not written yet")
    manifest = load_package(package).manifest
    assert manifest.sr_template == "brain_extraction_t1"
    assert template.check_manifest(manifest) == []
