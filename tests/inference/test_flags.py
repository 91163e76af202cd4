"""A model's own flags (``[[flags]]``: a second output marking undecided voxels) and truncation
by the field of view, from the manifest through run_model to the pipeline's result."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest
from onnx import TensorProto, helper
from support.onnx_models import const, header, io, label, model, package

from node.imaging.volume import Volume
from node.inference import SessionRegistry, run_model
from node.inference.check import check_models
from node.inference.execute import Predictor
from node.inference.manifest import Code, ManifestError, parse_manifest
from node.pipeline import run_pipeline

UINT8 = TensorProto.UINT8
RAS = np.diag([-1.0, -1.0, 1.0])
FLAG = """
[[flags]]
output = "undecided"
name = "Undecided field of view"
labels = [1]
"""


@pytest.fixture(scope="module")
def registry() -> SessionRegistry:
    return SessionRegistry()


def flagging_model(undecided: str = "undecided"):
    """Label map ``y`` (uint8, N1DHW): 1 where x > 0.5, 2 where x > 0.8; and ``undecided``
    (uint8, the same shape): 1 where x > 0.6, over both labels."""
    nodes = [
        const("t1", 0.5), const("t2", 0.8), const("t3", 0.6),
        helper.make_node("Greater", ["x", "t1"], ["g1"]),
        helper.make_node("Greater", ["x", "t2"], ["g2"]),
        helper.make_node("Greater", ["x", "t3"], ["g3"]),
        helper.make_node("Cast", ["g1"], ["c1"], to=UINT8),
        helper.make_node("Cast", ["g2"], ["c2"], to=UINT8),
        helper.make_node("Add", ["c1", "c2"], ["y"]),
        helper.make_node("Cast", ["g3"], [undecided], to=UINT8),
    ]
    shape = ["N", 1, "D", "H", "W"]
    return model(nodes, [io("x", shape)],
                 [io("y", shape, UINT8), io(undecided, shape, UINT8)])


def flagging_toml(name: str = "flagged", flags: str = FLAG) -> str:
    return (header(name, activation="labelmap", dtype="uint8")
            + label(1, "Soft", "postprocess = { largest_components = 1 }")
            + label(2, "Dense") + flags)


def _volume(direction=None) -> Volume:
    """Cube A (label 1, 0.7), a speck of 0.7 apart (removed by largest_components), and cube
    B (label 2, 0.9) touching the last column (i = 13) and nothing else."""
    a = np.zeros((10, 12, 14), np.float32)
    a[2:6, 2:6, 2:6] = 0.7  # 64 voxels
    a[8, 9, 3] = 0.7
    a[3:7, 5:9, 10:14] = 0.9
    return Volume(a, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0),
                  np.eye(3) if direction is None else direction)


def test_a_listed_label_in_the_mask_is_flagged_an_unlisted_one_is_not(tmp_path, registry):
    pkg = package(tmp_path, "flagged", flagging_toml(), flagging_model())
    assert [(f.output, f.name, f.labels, f.concept) for f in pkg.manifest.flags] == [
        ("undecided", "Undecided field of view", (1,), None)]
    out = run_model(pkg, _volume(), registry)
    # Label 2 lies in the mask too, but the flag lists only label 1; the speck of label 1 in
    # the mask is gone before the flag is raised: only the final voxels count.
    assert [(f.label, f.name, f.voxels) for f in out.flags] == [
        (1, "Undecided field of view", 64)]
    assert out.flags[0].volume_ml == pytest.approx(64 * 2.0 / 1000)
    assert out.flags_of(2) == ()


def test_flag_concept_and_default_labels(tmp_path, registry):
    flags = """
    [[flags]]
    output = "undecided"
    name = "Cut"
    concept = { value = "130576", scheme = "DCM", meaning = "Anatomy coverage incomplete" }
    """
    pkg = package(tmp_path, "concept", flagging_toml("concept", flags), flagging_model())
    (flag,) = pkg.manifest.flags
    assert flag.labels == (1, 2)  # default: every reported label
    assert flag.concept == Code("130576", "DCM", "Anatomy coverage incomplete")
    out = run_model(pkg, _volume(), registry)
    assert {(f.label, f.concept) for f in out.flags} == {(1, flag.concept), (2, flag.concept)}


def test_a_model_without_flags_fetches_only_its_labels(tmp_path, registry):
    pkg = package(tmp_path, "plain", flagging_toml("plain", flags=""), flagging_model())
    assert Predictor(registry.get(pkg)).flag_outputs == ()
    assert run_model(pkg, _volume(), registry).flags == ()


@pytest.mark.parametrize(("direction", "face"), [(None, "left"), (RAS, "right")],
                         ids=["LPS", "RAS"])
def test_pipeline_result_says_truncated_and_flagged(tmp_path, registry, direction, face):
    pkg = package(tmp_path, "flagged", flagging_toml(), flagging_model())
    result = run_pipeline(_volume(direction), pkg, tmp_path / "out", registry=registry)
    soft, dense = result.regions[1], result.regions[2]
    assert (soft.truncated, soft.truncated_at, soft.flags) == (
        False, (), ("Undecided field of view",))
    # Cube B reaches the last column: on LPS the patient's left, on RAS (i towards the
    # patient's right) the right.
    assert (dense.truncated, dense.truncated_at, dense.flags) == (True, (face,), ())
    saved = json.loads((tmp_path / "out" / "measurements.json").read_text())
    assert saved["regions"]["Soft"]["flags"] == ["Undecided field of view"]
    assert saved["regions"]["Dense"]["truncated"] is True
    assert saved["regions"]["Dense"]["truncated_at"] == [face]
    assert saved["flags"] == [{"label": 1, "label_name": "Soft",
                               "name": "Undecided field of view", "voxels": 64,
                               "volume_ml": pytest.approx(0.128)}]


def _parse(text: str):
    raw = tomllib.loads("\n".join(line.strip() for line in text.splitlines()))
    return parse_manifest(raw, "models/m/model.toml")


@pytest.mark.parametrize(("text", "message"), [
    (flagging_toml().replace('mode = "whole"', 'mode = "sliding_window"\npatch_size = [4, 4, 4]'),
     "flags: only for run.mode = 'whole' (got 'sliding_window')"),
    (flagging_toml(flags=FLAG.replace("labels = [1]", "labels = [7]")),
     "flags[0].labels: [7] are not label values this model reports"),
    (flagging_toml(flags=FLAG.replace('"undecided"', '"y"')),
     "flags[0].output: is the label output 'y'"),
    (flagging_toml(flags=FLAG + FLAG.replace("labels = [1]", "labels = [2]")),
     "flags[1].output: output 'undecided' is flagged twice"),
    (flagging_toml(flags=FLAG + "colour = 1\n"), "flags[0].colour: unknown key"),
    (flagging_toml(flags=FLAG.replace("name = ", "#")), "flags[0].name: is required"),
])
def test_manifest_errors_name_the_key(text, message):
    with pytest.raises(ManifestError, match=r"^models/m/model\.toml: ") as err:
        _parse(text)
    assert message in str(err.value)


def test_flags_on_a_multi_stage_model_are_refused():
    text = """
    name = "two"
    version = "1"
    description = "d"
    licence = "MIT"
    intended_use = "tests"
    for_clinical_use = false
    [accepts]
    modality = ["CT"]
    [[stages]]
    name = "box"
    file = "box.onnx"
    [stages.input]
    name = "x"
    layout = "NCDHW"
    [stages.output]
    name = "y"
    kind = "segmentation"
    [[stages]]
    name = "seg"
    file = "seg.onnx"
    [stages.input]
    name = "x"
    layout = "NCDHW"
    [stages.output]
    name = "y"
    kind = "segmentation"
    activation = "labelmap"
    [[labels]]
    value = 1
    name = "a"
    [[flags]]
    output = "undecided"
    name = "u"
    """
    with pytest.raises(ManifestError, match=r"flags: only for a one-stage model \(this one has "
                                            r"2 \[\[stages\]\]\)"):
        _parse(text)


def test_check_names_a_flag_output_missing_from_the_graph(tmp_path):
    package(tmp_path, "good", flagging_toml("good"), flagging_model())
    package(tmp_path, "missing", flagging_toml("missing"), flagging_model("unsure"))
    problems = [str(p) for p in check_models(tmp_path)]
    assert problems == ["missing: flags[0].output 'undecided' is not a graph output (graph "
                        "outputs: unsure, y)"]
