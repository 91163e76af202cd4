"""Routing conditions over real pydicom datasets."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.dataset import Dataset

from node.config import RouteConfig
from node.routing.facts import SeriesFacts
from node.routing.router import Router
from node.routing.rules import RuleError, compile_condition


def header(**attrs: object) -> Dataset:
    ds = Dataset()
    ds.Modality = "CT"
    ds.SeriesDescription = "Thorax 1.0 B70f"
    ds.SliceThickness = "1.0"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.BodyPartExamined = "CHEST"
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def matches(spec: dict, ds: Dataset | None = None, instances: int = 200,
            calling: str = "CT1") -> bool:
    facts = SeriesFacts(ds if ds is not None else header(), instances, calling)
    return compile_condition(spec)(facts).matched


def test_equality_and_lists() -> None:
    assert matches({"Modality": "CT"})
    assert not matches({"Modality": "MR"})
    assert matches({"Modality": ["MR", "CT"]})
    assert matches({"Modality": {"in": ["CT", "PT"]}})
    assert not matches({"Modality": ["MR", "PT"]})


def test_regular_expressions() -> None:
    assert matches({"SeriesDescription": {"regex": "(?i)thorax"}})
    assert not matches({"SeriesDescription": {"regex": "^Abdomen"}})
    assert matches({"SeriesDescription": {"regex": r"B\d+f$"}})


def test_numeric_ranges_on_attributes_and_instance_count() -> None:
    assert matches({"SliceThickness": {"min": 0.5, "max": 1.5}})
    assert not matches({"SliceThickness": {"max": 0.8}})
    assert matches({"instances": {"min": 100}}, instances=300)
    assert not matches({"instances": {"min": 100}}, instances=20)
    # a malformed value read from a file never satisfies a range and never raises
    assert not matches({"SliceThickness": {"min": 0}}, malformed_slice_thickness())
    assert matches({"Modality": "CT"}, malformed_slice_thickness())


def malformed_slice_thickness() -> Dataset:
    """A header as read from an implicit-VR file whose SliceThickness (DS) says 'thin'."""
    ds = header()
    del ds.SliceThickness
    ds.add_new(0x00180050, "LO", "thin")
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, implicit_vr=True, little_endian=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()), force=True)


def test_calling_ae_title() -> None:
    assert matches({"calling_ae_title": "CT1"})
    assert not matches({"calling_ae_title": "CT1"}, calling="MR7")
    assert not matches({"calling_ae_title": "CT1"}, calling="")


def test_and_or_not() -> None:
    spec = {"any": [{"Modality": "MR"}, {"all": [{"Modality": "CT"},
                                                 {"not": {"BodyPartExamined": "HEAD"}}]}]}
    assert matches(spec)
    assert not matches(spec, header(BodyPartExamined="HEAD"))
    assert matches(spec, header(Modality="MR", BodyPartExamined="HEAD"))
    # keys in one table are ANDed
    assert not matches({"Modality": "CT", "BodyPartExamined": "ABDOMEN"})


def test_missing_attribute_does_not_match_and_never_raises() -> None:
    ds = header()
    del ds.BodyPartExamined
    del ds.SliceThickness
    assert not matches({"BodyPartExamined": "CHEST"}, ds)
    assert not matches({"BodyPartExamined": {"regex": "."}}, ds)
    assert not matches({"SliceThickness": {"min": 0}}, ds)
    assert matches({"BodyPartExamined": {"exists": False}}, ds)
    assert not matches({"ContrastBolusAgent": {"exists": True}}, ds)
    # an empty value counts as missing
    assert not matches({"BodyPartExamined": {"exists": True}}, header(BodyPartExamined=""))


def test_multi_valued_attributes_match_any_value() -> None:
    assert matches({"ImageType": "AXIAL"})
    assert not matches({"ImageType": "LOCALIZER"})
    assert matches({"ImageType": {"regex": "^DERIVED$"}}, header(ImageType=["DERIVED", "X"]))


def test_orientation_fact() -> None:
    assert matches({"orientation": "axial"})
    assert matches({"orientation": "coronal"}, header(ImageOrientationPatient=[1, 0, 0, 0, 0, -1]))
    assert matches({"orientation": "sagittal"},
                   header(ImageOrientationPatient=[0, 1, 0, 0, 0, -1]))
    assert matches({"orientation": "oblique"},
                   header(ImageOrientationPatient=[1, 0, 0, 0, 0.7071, 0.7071]))
    ds = header()
    del ds.ImageOrientationPatient
    assert not matches({"orientation": "axial"}, ds)


def test_reasons_explain_the_outcome() -> None:
    cond = compile_condition({"Modality": "CT", "instances": {"min": 500}})
    outcome = cond(SeriesFacts(header(), 200, ""))
    assert not outcome.matched
    assert outcome.reasons[-1] == "instances is 200: fails min 500"


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"Modalityy": "CT"}, ".Modalityy"),
        ({"any": []}, ".any"),
        ({"all": [{"Modality": {"regexp": "x"}}]}, ".all[0].Modality"),
        ({"SliceThickness": {"min": "1"}}, ".SliceThickness.min"),
        ({"Modality": {}}, ".Modality"),
        ({"Modality": {"exists": "yes"}}, ".Modality.exists"),
    ],
)
def test_bad_conditions_are_refused_with_their_path(spec: dict, path: str) -> None:
    with pytest.raises(RuleError) as info:
        compile_condition(spec)
    assert info.value.path == path


def test_router_yields_one_job_per_model_and_trigger() -> None:
    router = Router([
        RouteConfig(name="ct", models=["lung_ct", "body"], match={"Modality": "CT"}),
        RouteConfig(name="ct-again", models=["lung_ct"], match={"Modality": "CT"}),
        RouteConfig(name="mr", models=["brain"], match={"Modality": "MR"}),
        RouteConfig(name="study", models=["summary"], match={}, on="study"),
    ])
    facts = SeriesFacts(header(), 100, "")
    assert router.jobs(facts, "series") == [("ct", "lung_ct"), ("ct", "body")]
    assert router.jobs(facts, "study") == [("study", "summary")]
