"""The shipped reference model models/lung_ct on real CT and on the synthetic chest phantom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from node.imaging.volume import Volume
from node.inference import SessionRegistry, load_package, run_model
from node.synthetic import chest_phantom

REPO = Path(__file__).resolve().parents[2]
LEFT, RIGHT, BODY = 1, 2, 3


@pytest.fixture(scope="module")
def lung_ct():
    return load_package(REPO / "models" / "lung_ct")


@pytest.fixture(scope="module")
def registry():
    return SessionRegistry()


def _read(path: Path) -> Volume:
    # Read with SimpleITK directly, as the brief asks (node.imaging.sitk_io does the same).
    image = sitk.ReadImage(str(path))
    return Volume(
        array=sitk.GetArrayFromImage(image).astype(np.float32),
        spacing=image.GetSpacing(),
        origin=image.GetOrigin(),
        direction=np.asarray(image.GetDirection()).reshape(3, 3),
        modality="CT",
    )


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_lungs_against_totalsegmentator(shared_data, lung_ct, registry):
    case = shared_data / "ct_abdomen_ts_nifti"
    ct = _read(case / "example_ct.nii.gz")
    ts = sitk.GetArrayFromImage(
        sitk.ReadImage(str(case / "reference_predictions/example_seg_fast_force_split.nii.gz")))
    out = run_model(lung_ct, ct, registry)
    assert out.label_map.shape == ct.array.shape
    left, right = np.isin(ts, [10, 11]), np.isin(ts, [12, 13, 14])
    lm = out.label_map
    lungs = _dice(np.isin(lm, [LEFT, RIGHT]), left | right)
    per_side = _dice(lm == LEFT, left), _dice(lm == RIGHT, right)
    print(f"lung_ct Dice vs TotalSegmentator: lungs {lungs:.3f}, left {per_side[0]:.3f}, "
          f"right {per_side[1]:.3f}")
    assert lungs >= 0.90
    assert min(per_side) >= 0.90
    body = lm > 0
    assert body[ct.array > 0].mean() > 0.97  # soft tissue and bone are inside the body


def _phantom(direction: np.ndarray) -> Volume:
    """The synthetic chest on a 2 mm grid, 40 slices, with the given axis directions."""
    n, sp = 200, 2.0
    idx = (np.arange(n) - (n - 1) / 2) * sp
    z = np.arange(40) * sp
    zz, yy, xx = np.meshgrid(z, idx, idx, indexing="ij")
    lps = chest_phantom(xx, yy, zz).astype(np.float32)  # array (k, j, i) with LPS axes
    vol = Volume(lps, (sp, sp, sp), (idx[0], idx[0], 0.0))
    if np.allclose(direction, np.eye(3)):
        return vol
    flipped = lps[:, ::-1, ::-1].copy()  # RAS: i grows to the right, j to the front
    return Volume(flipped, (sp, sp, sp), (-idx[0], -idx[0], 0.0), np.diag([-1.0, -1.0, 1.0]))


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, -1.0, 1.0])],
                         ids=["LPS", "RAS"])
def test_phantom_sides_and_volumes(lung_ct, registry, direction):
    vol = _phantom(direction)
    out = run_model(lung_ct, vol, registry)
    lm = out.label_map
    height_mm = 40 * 2.0
    lung_ml = np.pi * 55 * 75 * height_mm / 1000  # elliptic cylinder of the phantom
    for value, sign in ((LEFT, 1), (RIGHT, -1)):
        mask = lm == value
        ml = mask.sum() * vol.voxel_volume_mm3 / 1000
        assert ml == pytest.approx(lung_ml, rel=0.05), (value, ml, lung_ml)
        centroid = vol.index_to_patient(np.array(np.nonzero(mask))[::-1].mean(axis=1))
        assert np.sign(centroid[0]) == sign  # LPS: +x is the patient's left
        assert abs(centroid[0]) == pytest.approx(75, abs=3)
        # the -975 HU patch inside each lung belongs to the lung (LAA-950 must see it)
        assert (vol.array[mask] < -950).sum() > 0
    body_ml = (lm > 0).sum() * vol.voxel_volume_mm3 / 1000
    assert body_ml == pytest.approx(np.pi * 160 * 110 * height_mm / 1000, rel=0.03)
    assert out.timings.inference > 0
