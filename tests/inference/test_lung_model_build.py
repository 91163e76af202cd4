"""The shipped lung_ct model.onnx is exactly what the build script beside it produces."""

from __future__ import annotations

import importlib.util

from support.tools import REPO


def test_committed_onnx_matches_its_build_script() -> None:
    script = REPO / "models" / "lung_ct" / "build_model.py"
    spec = importlib.util.spec_from_file_location("lung_ct_build", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = module.build().SerializeToString()
    shipped = (REPO / "models" / "lung_ct" / "model.onnx").read_bytes()
    assert built == shipped, "run: python models/lung_ct/build_model.py"
