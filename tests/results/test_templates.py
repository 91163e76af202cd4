"""SR templates: the shipped ones load and fit their manifests; every error names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.inference.manifest import load_package
from node.results import BUILTIN_MEASUREMENTS, TemplateError, load_template, parse_template

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "sr_templates"


def test_lung_ct_template_loads_and_fits_its_manifest():
    manifest = load_package(REPO / "models" / "lung_ct").manifest
    template = load_template(manifest.sr_template, TEMPLATES)
    assert template.check_manifest(manifest) == []
    assert template.segments is not None and template.segments.labels == (1, 2)
    assert template.segments.measurements == ("volume", "mean", "LAA-950")
    laa = template.measurement("LAA-950")
    assert (laa.concept.scheme, laa.unit.value) == ("99RADNODE", "%")
    assert template.coding_schemes == {"99RADNODE": "radnode local codes"}
    assert [c.value for c in template.procedure_reported] == ["24627-2"]
    assert template.findings[1].finding_site.meaning == "Left lung"


def test_every_shipped_template_loads():
    names = sorted(p.stem for p in TEMPLATES.glob("*.toml"))
    assert "lung_ct" in names
    for name in names:
        load_template(name, TEMPLATES)


def test_no_name_gives_the_builtin_default():
    template = load_template("", TEMPLATES)
    assert template.segments.measurements == ("volume", "mean", "std")
    assert dict(template.measurements) == dict(BUILTIN_MEASUREMENTS)
    assert template.measurement("volume").unit.value == "ml"


def test_check_manifest_reports_names_the_model_does_not_measure():
    manifest = load_package(REPO / "models" / "lung_ct").manifest
    template = parse_template({"segments": {"labels": [1, 9], "measurements": ["volume", "max"]}})
    assert template.check_manifest(manifest) == [
        "segments.labels: 9 is not a label of lung_ct",
        "segments.measurements: 'max' is not measured by lung_ct (add it to its [[measurements]])",
    ]


@pytest.mark.parametrize(("raw", "key", "message"), [
    ({"segmnts": {}}, "segmnts", "unknown key"),
    ({"segments": {"measurements": ["volume", "LAA-950"]}}, "segments.measurements[1]",
     "'LAA-950' has no code"),
    ({"segments": {"measurements": ["volume", "volume"]}}, "segments.measurements", "repeated"),
    ({"segments": {"labels": [0]}}, "segments.labels", "label values > 0"),
    ({"segments": {"tracking_id": "{nme}"}}, "segments.tracking_id", "unknown field"),
    ({"detections": {"graphic": "circle"}}, "detections.graphic", "point, polygon"),
    ({"measurements": {"x": {"concept": {"value": "1", "scheme": "DCM", "meaning": "X"},
                             "unit": {"value": "mm", "scheme": "SCT", "meaning": "mm"}}}},
     "measurements.x.unit", "UCUM"),
    ({"measurements": {"x": {"concept": {"value": "1", "scheme": "DCM"}, "unit": "intensity"}}},
     "measurements.x.concept.meaning", "is required"),
    ({"measurements": {"x": {"unit": "intensity"}}}, "measurements.x.concept", "is required"),
    ({"measurements": {"x": {"concept": {"value": "12345678901234567", "scheme": "DCM",
                                         "meaning": "X"}, "unit": "intensity"}}},
     "measurements.x.concept.value", "at most 16"),
    ({"measurements": {"x": {"concept": {"value": "1", "scheme": "99ME", "meaning": "X"},
                             "unit": "intensity"}}},
     "measurements.x.concept", "'99ME' is not declared"),
    ({"labels": {"one": {}}}, "labels.one", "named by label value"),
    ({"labels": {"1": {"finding_typ": {}}}}, "labels.1.finding_typ", "unknown key"),
    ({"procedure_reported": []}, "procedure_reported", "non-empty list"),
    ({"report_absent": "yes"}, "report_absent", "true or false"),
    ({"totals": {"tracking_id": "{name} {rank}"}}, "totals.tracking_id", "unknown field"),
    ({"totals": {"measurements": ["volume", "percent_icv"]}}, "totals.measurements[1]",
     "'percent_icv' has no code"),
    ({"totals": {"names": []}}, "totals.names", "must not be empty"),
    ({"totals": {"names": ["a", "a"]}}, "totals.names", "repeated"),
    ({"totals": {"name": ["a"]}}, "totals.name", "unknown key"),
])
def test_template_errors_name_the_key(raw, key, message):
    with pytest.raises(TemplateError) as err:
        parse_template(raw, "bad", Path("sr_templates/bad.toml"))
    text = str(err.value)
    assert text.startswith(f"sr_templates/bad.toml: {key}: "), text
    assert message in text


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(TemplateError, match=r"missing\.toml: SR template 'missing' does not"):
        load_template("missing", tmp_path)
    (tmp_path / "broken.toml").write_text("segments = [", encoding="utf-8")
    with pytest.raises(TemplateError, match=r"broken\.toml: not valid TOML"):
        load_template("broken", tmp_path)
    with pytest.raises(TemplateError, match="letters, digits"):
        load_template("../etc/passwd", tmp_path)


def test_groups_can_be_switched_off():
    template = parse_template({"detections": False, "classifications": False})
    assert template.detections is None and template.classifications is None
    assert template.segments is not None


def test_totals_default_to_every_total_and_can_be_switched_off():
    template = parse_template({})
    assert template.totals is not None and template.totals.names is None
    assert template.totals.measurements == ("volume",) and template.totals.includes("x")
    assert parse_template({"totals": False}).totals is None
    picked = parse_template({"totals": {"names": ["Intracranial volume"]}}).totals
    assert picked.includes("Intracranial volume") and not picked.includes("Total brain volume")


def test_check_manifest_knows_split_values_and_totals():
    manifest = load_package(REPO / "models" / "brain_structures_t1").manifest
    # A split label's left and right values (17, 53) and a reported_value (14) are labels;
    # the network's own values of split labels are not.
    fine = parse_template({"segments": {"labels": [17, 53, 14], "measurements": ["volume"]},
                           "labels": {"53": {}},
                           "totals": {"names": ["Intracranial volume"]}})
    assert fine.check_manifest(manifest) == []
    template = parse_template({
        "segments": {"labels": [17, 99], "measurements": ["volume", "mean"]},
        "labels": {"99": {}},
        "totals": {"names": ["Intracranial volume", "Skull volume"],
                   "measurements": ["volume", "mean"]},
    })
    assert template.check_manifest(manifest) == [
        "segments.labels: 99 is not a label of brain_structures_t1",
        "labels.99: 99 is not a label of brain_structures_t1",
        "segments.measurements: 'mean' is not measured by brain_structures_t1 (add it to its "
        "[[measurements]])",
        "totals.names: 'Skull volume' is not one of the [[totals]] of brain_structures_t1",
        "totals.measurements: 'mean' is not measured of totals (only volume)",
    ]
