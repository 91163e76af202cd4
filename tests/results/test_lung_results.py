"""The reference model end to end: lung_ct on a small synthetic chest -> SEG + SR, validated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from support.results import WHEN
from support.validators import validate_set

from node.imaging import load_series
from node.inference import load_package, run_model
from node.measure import measure_labels
from node.results import (
    build_report,
    build_segmentation,
    load_template,
    read_measurements,
    read_segmentation,
    read_sources,
    result_uids,
    write_dataset,
)
from node.synthetic import SeriesGeometry, chest_phantom, write_series

REPO = Path(__file__).resolve().parents[2]
CHEST = SeriesGeometry(rows=128, columns=128, slices=40, pixel_spacing=(3.0, 3.0),
                       slice_spacing=3.0, origin=(-190.5, -190.5, 0.0))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lung")
    paths = write_series(folder / "ct", CHEST, chest_phantom)
    volume = load_series(paths)
    package = load_package(REPO / "models" / "lung_ct")
    manifest = package.manifest
    output = run_model(package, volume)
    requests = [{k: v for k, v in m.items() if k != "labels"} for m in manifest.measurements]
    measured = measure_labels(volume, output.label_map, [1, 2], requests)
    template = load_template(manifest.sr_template, REPO / "sr_templates")
    sources = read_sources(volume)
    uids = result_uids(sources.series_instance_uid, manifest.name, manifest.version)
    common = dict(manufacturer="radnode", content_datetime=WHEN)
    seg = build_segmentation(
        sources, output, sop_instance_uid=uids.seg_instance, series_instance_uid=uids.seg_series,
        series_number=9001, series_description="radnode lung_ct", **common,
        model_description=manifest.description)
    sr = build_report(
        sources, volume, output, measured, [], [], template, seg,
        sop_instance_uid=uids.sr_instance, series_instance_uid=uids.sr_series,
        series_number=9002, series_description="radnode lung_ct", **common)
    return (paths, volume, output, measured, write_dataset(seg, folder / "seg.dcm"),
            write_dataset(sr, folder / "sr.dcm"))


def test_lung_seg_and_sr_pass_every_validator(run):
    paths, _, _, _, seg, sr = run
    validate_set(paths, seg.path, sr.path)


def test_lung_seg_round_trips_the_label_map(run):
    _, volume, output, _, seg, _ = run
    back = read_segmentation(seg.path, volume.sources)
    assert [s.label for s in back.segments] == ["Left lung", "Right lung", "Body"]
    assert [s.type.value for s in back.segments] == ["44029006", "3341006", "38266002"]
    np.testing.assert_array_equal(back.label_map(), output.label_map)


def test_lung_sr_reports_volume_mean_and_laa950_per_lung(run):
    _, _, _, measured, _, sr = run
    records = read_measurements(sr.path)
    got = {(r.tracking_id, r.concept.value, r.derivation): (r.value, r.unit) for r in records}
    assert len(records) == 6  # 2 lungs x (volume, mean, LAA-950); no group for the body
    for label, name in ((1, "Left lung"), (2, "Right lung")):
        m = measured[label]
        assert got[(name, "118565006", None)] == (pytest.approx(m.volume_ml, rel=1e-9), "ml")
        assert got[(name, "112031", "Mean")] == (pytest.approx(m.mean, rel=1e-9), "[hnsf'U]")
        assert got[(name, "LAA950", None)] == (pytest.approx(m.value("LAA-950"), rel=1e-9), "%")
        # The phantom: lung at -860 HU with an emphysematous patch at -975 HU.
        assert -975 < m.mean < -860
        assert 0 < m.value("LAA-950") < 30
        assert m.volume_ml > 300


# A field of view inside the chest (lungs on all four borders, no body outline on the lateral
# ones), 12 slices: a real DICOM series through the whole pipeline.
INSIDE_CHEST = SeriesGeometry(rows=39, columns=77, slices=12, pixel_spacing=(3.0, 3.0),
                              slice_spacing=3.0, origin=(-114.0, -66.0, 0.0))


def test_a_cut_field_of_view_is_said_in_the_result_and_the_sr(tmp_path):
    import json

    from node.config import OutputConfig, ResultsConfig
    from node.pipeline import run_pipeline
    from node.results.objects import ResultSettings

    paths = write_series(tmp_path / "ct", INSIDE_CHEST, chest_phantom)
    settings = ResultSettings(ResultsConfig(), OutputConfig(), REPO / "sr_templates", WHEN)
    result = run_pipeline(paths, load_package(REPO / "models" / "lung_ct"), tmp_path / "out",
                          results=settings)
    summary = json.loads((tmp_path / "out" / "measurements.json").read_text())
    regions = summary["regions"]
    for name, side in (("Left lung", "left"), ("Right lung", "right")):
        assert regions[name]["truncated"] is True
        assert set(regions[name]["truncated_at"]) == {side, "anterior", "posterior",
                                                       "inferior", "superior"}
        assert regions[name]["flags"] == ["Undecided field of view"]
    assert {(f["label_name"], f["name"]) for f in summary["flags"]} == {
        ("Left lung", "Undecided field of view"), ("Right lung", "Undecided field of view")}
    validate_set(paths, result.files["seg"], result.files["sr"])
    text = str(pydicom.dcmread(result.files["sr"]))
    assert text.count("Anatomy coverage incomplete") == 2
    assert text.count("Region partly undecided by the algorithm") == 2
