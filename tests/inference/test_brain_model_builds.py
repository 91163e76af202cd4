"""The shipped brain ONNX graphs are what their build scripts make from the published weights.

MeshNet graphs are written with onnx.helper from brainchop's TensorFlow.js files (no torch needed),
so the test rebuilds them; deepbet's export needs torch and deepbet itself (build time only), so
that rebuild is checked only where both are installed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import onnx
import pytest
from support.tools import REPO

MODELS = REPO / "models"


def _shared_models() -> Path:
    return Path(os.environ.get("RADNODE_SHARED_MODELS", REPO.parent / "shared" / "models"))


def _meshnet_build():
    spec = importlib.util.spec_from_file_location("meshnet_build", MODELS / "meshnet_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("meshnet_build", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("package", "upstream"), [
    ("brain_structures_t1", "model30chan18cls"), ("brain_extraction_mr", "mindgrab")])
def test_meshnet_onnx_is_what_the_build_script_makes(package, upstream):
    folder = _shared_models() / "brainchop" / upstream
    if not (folder / "model.json").is_file():
        pytest.skip(f"brainchop weights not found at {folder} (set RADNODE_SHARED_MODELS)")
    build = _meshnet_build()
    built = build.build_onnx(build.load_tfjs_meshnet(folder), "")
    shipped = onnx.load(MODELS / package / "model.onnx")
    built.doc_string = shipped.doc_string = ""
    assert built.SerializeToString() == shipped.SerializeToString(), \
        f"run: python models/{package}/build_model.py --skip-reference"


def test_deepbet_onnx_is_what_the_build_script_makes(tmp_path):
    pytest.importorskip("torch", reason="torch is needed by the deepbet build step only")
    pytest.importorskip("deepbet", reason="deepbet 1.0.2 (pip install --no-deps) is needed by "
                        "the build step only")
    folder = MODELS / "brain_extraction_t1"
    spec = importlib.util.spec_from_file_location("deepbet_build", folder / "build_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    weights = module.locate_weights(tmp_path)  # the installed deepbet's files: no download
    for name, (_, _, size) in module.WEIGHTS.items():
        module.export(weights[name], tmp_path / name, size, True)
        assert (tmp_path / name).read_bytes() == (folder / name).read_bytes(), \
            "run: python models/brain_extraction_t1/build_model.py --skip-reference"
