"""The brain models from published weights: the node reproduces the original framework's output
on the real input its build script recorded, and is as accurate as measured in docs/models.md."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from node.imaging.inputs import load_image_file, load_input
from node.inference import SessionRegistry, load_package, run_model

MODELS = REPO / "models"


@pytest.fixture(scope="module")
def registry() -> SessionRegistry:
    return SessionRegistry()


def _reference(package: str, case: str, shared_data: Path) -> tuple[dict, Path]:
    """The recorded reference of ``case`` and its input, after checking the input is the one
    the build script read."""
    record = json.loads((MODELS / package / "reference" / f"{case}.json").read_text())
    source = shared_data / record["input"]
    if not source.is_file():
        pytest.skip(f"{record['input']} is not in the shared data")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert digest == record["input_sha256"], f"{source} is not the file the reference was made from"
    return record, source


def _agreement(labels: np.ndarray, reference: np.ndarray) -> float:
    assert labels.shape == reference.shape
    return float(np.mean(labels == reference))


@pytest.mark.slow
def test_brain_extraction_matches_deepbet(shared_data, registry):
    """deepbet 1.0.2 run by itself (torch) on chris_t1, against the node's manifest-driven
    re-implementation of its pre- and post-processing around the ONNX graphs."""
    record, source = _reference("brain_extraction_t1", "chris_t1", shared_data)
    out = run_model(load_package(MODELS / "brain_extraction_t1"), load_input(source), registry)
    reference = load_image_file(
        MODELS / "brain_extraction_t1" / "reference" / "chris_t1_mask.nii.gz", dtype=None)
    assert out.label_map is not None
    agree = _agreement(out.label_map > 0, reference.array > 0)
    assert agree >= 0.9999, f"{agree:.6f} of voxels agree with deepbet"
    volume_ml = float(np.count_nonzero(out.label_map)) * reference.voxel_volume_mm3 / 1000
    assert volume_ml == pytest.approx(record["tiv_ml"], rel=1e-3)
