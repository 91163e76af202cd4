"""check_models: manifests against their ONNX graphs, each problem naming model and cause."""

from __future__ import annotations

import shutil
from pathlib import Path

from onnx import TensorProto
from support.onnx_models import header, label, package, pointwise_conv, two_class_logits

from node.inference.check import check_models

REPO = Path(__file__).resolve().parents[2]


def test_shipped_models_are_valid():
    assert check_models(REPO / "models") == []


def _messages(models: Path) -> list[str]:
    return [str(p) for p in check_models(models)]


def test_names_ranks_dtypes_and_sizes(tmp_path):
    ok = header("ok") + label(1, "fg")
    package(tmp_path, "ok", ok, two_class_logits())
    package(tmp_path, "badname", header("badname").replace('name = "x"', 'name = "image"')
            + label(1, "fg"), two_class_logits())
    package(tmp_path, "rank", header("rank") + label(1, "fg"), two_class_logits(rank=4))
    package(tmp_path, "dtype", header("dtype", extra_input='dtype = "float16"') + label(1, "fg"),
            two_class_logits())
    package(tmp_path, "outdtype", header("outdtype", dtype="float16") + label(1, "fg"),
            two_class_logits())
    package(tmp_path, "patch", header("patch", mode="sliding_window",
                                      extra_run="patch_size = [8, 8, 8]") + label(1, "fg"),
            two_class_logits(in_shape=["N", 1, 8, 16, 16]))
    package(tmp_path, "fixed", header("fixed") + label(1, "fg"),
            two_class_logits(in_shape=[1, 1, 8, 16, 16]))
    package(tmp_path, "channels", header("channels") + label(1, "a") + label(2, "b"),
            two_class_logits(out_shape=["N", 2, "D", "H", "W"]))
    package(tmp_path, "batch", header("batch", layout="NCHW", mode="slicewise",
                                      extra_run="batch_size = 4") + label(1, "fg"),
            two_class_logits(rank=4, in_shape=[1, 1, "H", "W"]))
    package(tmp_path, "outname", header("outname").replace('name = "y"', 'name = "probs"')
            + label(1, "fg"), two_class_logits())
    package(tmp_path, "folder_differs", header("other") + label(1, "fg"), two_class_logits())
    package(tmp_path, "noonnx", header("noonnx") + label(1, "fg"), None)
    package(tmp_path, "lmdtype", header("lmdtype", activation="labelmap", dtype="uint8")
            + label(1, "fg"), pointwise_conv())
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.toml").write_text("name = 'broken'\n")
    got = _messages(tmp_path)
    expect = {
        "badname": "input.name 'image' is not a graph input (graph inputs: x)",
        "rank": "layout NCDHW means rank 5, the graph input has rank 4",
        "dtype": "input.dtype is float16 but the graph wants float32",
        "outdtype": "output.dtype is float16 but the graph gives float32",
        "patch": "run.patch_size is [8, 8, 8] but the graph fixes",
        "fixed": "spatial size is fixed",
        "channels": "label channel 2 is declared but the graph gives 2 channels",
        "batch": "batch size is fixed at 1 but run.batch_size is 4",
        "outname": "output.name 'probs' is not a graph output (graph outputs: y)",
        "folder_differs": "name 'other' differs from the folder name 'folder_differs'",
        "noonnx": "model.onnx is missing",
        "lmdtype": "output.dtype is uint8 but the graph gives float32",
        "broken": "broken/model.toml: version: is required",
    }
    for model, text in expect.items():
        hits = [m for m in got if m.startswith(f"{model}: ") and text in m]
        assert hits, f"{model}: expected {text!r} in {got}"
    assert not [m for m in got if m.startswith("ok: ")]
    assert TensorProto.FLOAT  # the tiny models are float32 throughout


def test_a_copy_of_the_lung_model_with_a_wrong_input_name(tmp_path):
    shutil.copytree(REPO / "models" / "lung_ct", tmp_path / "lung_ct")
    toml = tmp_path / "lung_ct" / "model.toml"
    toml.write_text(toml.read_text().replace('name = "ct"', 'name = "hu"'))
    (problem,) = check_models(tmp_path)
    assert problem.model == "lung_ct" and "input.name 'hu' is not a graph input" in problem.message


def test_missing_folder(tmp_path):
    (problem,) = check_models(tmp_path / "nope")
    assert "does not exist" in problem.message
