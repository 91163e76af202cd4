"""Manifest parsing: the shipped model is valid; every error names the file and the key."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from node.inference.manifest import ManifestError, load_manifest, parse_manifest

REPO = Path(__file__).resolve().parents[2]
LUNG = REPO / "models" / "lung_ct" / "model.toml"


def _raw() -> dict:
    return tomllib.loads(LUNG.read_text(encoding="utf-8"))


def test_lung_manifest_parses():
    m = load_manifest(LUNG)
    assert (m.name, m.version, m.for_clinical_use) == ("lung_ct", "1.1.0", False)
    assert m.input.spacing == (3.0, 3.0, 3.0) and m.input.orientation == "LPS"
    assert [lab.name for lab in m.labels] == ["Left lung", "Right lung", "Body"]
    assert m.label(1).type.value == "44029006" and m.label(1).type.scheme == "SCT"
    assert m.label(1).postprocess.absorb == (4,) and m.label(1).postprocess.fill_holes == "axial"
    assert m.label(3).postprocess.fill_holes == "3d"
    laa = next(x for x in m.measurements if x["kind"] == "fraction_below")
    assert laa["threshold"] == -950 and laa["name"] == "LAA-950"


def _set(raw: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = raw
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    if value is _DELETE:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value


_DELETE = object()

CASES = [
    ("input.spacing", [3, 0, 3], "input.spacing: must be 3 positive numbers"),
    ("input.spacing", [3, 3], "input.spacing: must be 3 positive numbers"),
    ("input.layout", "NCWH", "input.layout: must be one of"),
    ("input.orientation", "LPX", "input.orientation: orientation 'LPX'"),
    ("input.normalize", {"kind": "window", "center": 40}, "input.normalize.width: is required"),
    ("input.normalize", {"kind": "window", "center": 40, "width": -1},
     "input.normalize.width: must be greater than 0"),
    ("input.normalize", {"kind": "gamma"}, "input.normalize.kind: must be one of"),
    ("input.channels", 3, None),  # one normalisation copied to 3 channels is fine
    ("input.resize", [64, 64], "input.resize: must be 3 positive integers"),
    ("input.colour", 1, "input.colour: unknown key"),
    ("run.mode", "slicewise", "run.mode: must be one of whole, sliding_window"),
    ("run.mode", "sliding_window", "run.patch_size: is required"),
    ("run.mirror_axes", [0, 3], "run.mirror_axes: values must be among [0, 1, 2]"),
    ("output.kind", "regression", "output.kind: must be one of"),
    ("name", "lung ct", "name: letters, digits"),
    ("version", _DELETE, "version: is required"),
    ("for_clinical_use", "no", "for_clinical_use: must be true or false"),
    ("accepts.modality", [], "accepts.modality: must name at least one modality"),
    ("accepts.min_slices", 0, "accepts.min_slices: must be an integer >= 1"),
    ("labels.1.value", 1, "labels[1].value: duplicate label value 1"),
    ("labels.0.colour", [300, 0, 0], "labels[0].colour: must be 3 integers 0..255"),
    ("labels.0.type", {"value": "44029006"}, "labels[0].type.meaning: is required"),
    ("labels.0.postprocess", {"fill_holes": "2d"}, "labels[0].postprocess.fill_holes"),
    ("labels.0.postprocess", {"largest_components": -1},
     "labels[0].postprocess.largest_components: must be an integer >= 0"),
    ("labels.0.postprocess", {"cut_pieces": 0.2},
     "labels[0].postprocess.cut_pieces: keeps components that min_size_mm3"),
    ("labels.0.postprocess", {"largest_components": 1, "cut_pieces": 1.5},
     "labels[0].postprocess.cut_pieces: must be"),
    ("labels.0.postprocess", {"largest_components": 1, "keep_touching": [2]},
     "labels[0].postprocess.keep_touching: [2] must be labels declared before this one"),
    ("measurements.0.labels", [7], "measurements[0].labels: [7] are not declared"),
    ("measurements.0.kind", _DELETE, "measurements[0].kind: is required"),
    ("output.map_back", "linear",
     "output.map_back: must be one of nearest, label_linear (got 'linear')"),
    ("output.activation", "relu",
     "output.activation: must be one of softmax, sigmoid, labelmap, none (got 'relu')"),
    ("input.dtype", "float64",
     "input.dtype: must be one of float32, float16, int16, uint8, int32, int64 (got 'float64')"),
    ("input.resize_interpolation", "inside",
     "input.resize_interpolation: must be one of linear, nearest (got 'inside')"),
    ("input.pad_multiple", 0, "input.pad_multiple: must be an integer >= 1 (got 0)"),
    ("input.normalize", {"kind": "none", "statistics": "crops"},
     "input.normalize.statistics: must be one of crop, grid, source (got 'crops')"),
    ("run.overlap", 0.95, "run.overlap: must be between 0.0 and 0.9 (got 0.95)"),
    ("run.combine", "median", "run.combine: must be one of mean, max, top_k_mean (got 'median')"),
    ("crop", {"source": "threshold"}, "crop.fraction: is required with source = 'threshold'"),
    ("crop", {"source": "threshold", "fraction": 0.1, "interpolation": "inside"},
     "crop.interpolation: must be one of nearest, linear (got 'inside')"),
    ("labels.0.type", {"value": "1", "meaning": "m", "schema": "SCT"},
     "labels[0].type.schema: unknown key"),
    ("labels.0.postprocess", {"fill_holes": 1},
     "labels[0].postprocess.fill_holes: must be true, false, '3d' or 'axial' (got 1)"),
    ("postprocess", {"connectivity": 8},
     "postprocess.connectivity: must be 6 (faces) or 26 (faces, edges, corners) (got 8)"),
    ("accepts.max_slice_thickness", 0,
     "accepts.max_slice_thickness: must be greater than 0 (got 0)"),
]


@pytest.mark.parametrize(("key", "value", "message"), CASES, ids=[c[0] for c in CASES])
def test_errors_name_the_key(key, value, message):
    raw = copy.deepcopy(_raw())
    _set(raw, key, value)
    path = Path("models/lung_ct/model.toml")
    if message is None:
        parse_manifest(raw, path)
        return
    with pytest.raises(ManifestError) as info:
        parse_manifest(raw, path)
    text = str(info.value)
    assert text.startswith("models/lung_ct/model.toml: "), text
    assert message in text, text


def test_mirroring_a_label_map_is_refused():
    raw = _raw()
    raw["run"]["mirror_axes"] = [2]
    with pytest.raises(ManifestError, match=r"run\.mirror_axes: mirroring averages scores"):
        parse_manifest(raw)


def test_sigmoid_channels_default_to_value_minus_one():
    raw = _raw()
    raw["output"]["activation"] = "sigmoid"
    raw["output"]["dtype"] = "float32"
    m = parse_manifest(raw)
    assert [lab.channel for lab in m.labels] == [0, 1, 2]


def test_not_toml_is_reported(tmp_path):
    bad = tmp_path / "m" / "model.toml"
    bad.parent.mkdir()
    bad.write_text("name = \n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"m/model\.toml: not valid TOML"):
        load_manifest(bad)


def test_accepts_evaluates_a_header_and_a_count():
    accepts = load_manifest(LUNG).accepts
    ds = Dataset()
    ds.Modality = "CT"
    ds.SliceThickness = "1.25"
    assert accepts.matches(ds, 120)
    assert "at least 20" in accepts.rejects(ds, 12)
    assert "modality MR" in accepts.rejects({"Modality": "MR"}, 120)
    assert "slice thickness 6 mm" in accepts.rejects({"Modality": "CT", "SliceThickness": 6}, 99)
    raw = _raw()
    raw["accepts"]["body_part"] = ["chest", "thorax"]
    accepts = parse_manifest(raw).accepts
    assert accepts.matches({"Modality": "CT", "BodyPartExamined": "CHEST"}, 50)
    assert "body part ABDOMEN" in accepts.rejects(
        {"Modality": "CT", "BodyPartExamined": "ABDOMEN"}, 50)


def test_closed_sets_are_enums_equal_to_their_strings():
    from node.inference.manifest import (
        Activation,
        FillHoles,
        Interpolation,
        Layout,
        MapBack,
        NormalizationKind,
        OutputKind,
        RunMode,
        StatisticsFrom,
    )

    m = load_manifest(LUNG)
    assert m.output.kind is OutputKind.SEGMENTATION and m.output.kind == "segmentation"
    assert m.output.activation is Activation.LABELMAP
    assert m.output.map_back is MapBack.LABEL_LINEAR
    assert m.input.layout is Layout.NCDHW and m.input.is_2d is False
    assert m.input.normalize[0].kind is NormalizationKind.NONE
    assert m.input.normalize[0].statistics is StatisticsFrom.CROP
    assert m.input.resize_interpolation is Interpolation.LINEAR
    assert m.run.mode is RunMode.WHOLE and f"{m.run.mode}" == "whole"
    assert m.label(1).postprocess.fill_holes is FillHoles.AXIAL
    assert m.label(3).postprocess.fill_holes is FillHoles.D3


def test_defaults_come_from_the_schema():
    """A key left out takes the dataclass field's default (the one place it is written)."""
    from node.inference.manifest import InputSpec, OutputSpec, PostProcess, RunSpec

    raw = _raw()
    for key in ("dtype", "fill_value", "orientation", "spacing"):
        raw["input"].pop(key, None)
    raw["output"] = {"name": raw["output"]["name"], "kind": "segmentation",
                     "activation": "labelmap"}
    raw.pop("run", None)
    raw["labels"][0].pop("postprocess", None)
    m = parse_manifest(raw)
    assert (m.input.dtype, m.input.fill_value, m.input.orientation, m.input.spacing) == (
        InputSpec.dtype, None, InputSpec.orientation, None)
    assert m.run == RunSpec()
    assert (m.output.threshold, m.output.map_back, m.output.format) == (
        OutputSpec.threshold, OutputSpec.map_back, OutputSpec.format)
    assert m.labels[0].postprocess == PostProcess()
