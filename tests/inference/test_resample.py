"""node/imaging/resample.py: exact round trips, reorientation, field of view kept."""

from __future__ import annotations

import numpy as np
import pytest

from node.imaging.resample import orientation_code, reorient, resample, resample_like
from node.imaging.volume import Volume

RAS = np.diag([-1.0, -1.0, 1.0])
# A sagittal acquisition: i -> posterior, j -> inferior, k -> left.
SAGITTAL = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _labels(shape=(17, 23, 29), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4, size=shape).astype(np.uint8)


def _volume(array, direction=None, spacing=(0.7, 0.8, 2.5), origin=(10.0, -20.0, 30.0)):
    direction = np.eye(3) if direction is None else direction
    return Volume(array=array, spacing=spacing, origin=origin, direction=direction)


@pytest.mark.parametrize("direction", [np.eye(3), RAS, SAGITTAL], ids=["LPS", "RAS", "sagittal"])
def test_round_trip_through_lps_is_exact(direction):
    source = _volume(_labels(), direction)
    model = resample(source, spacing=source_spacing_after_lps(source), direction="LPS",
                     interpolation="nearest")
    assert orientation_code(model.direction) == "LPS"
    for interp in ("nearest", "label_linear"):
        back = resample_like(model, source, interpolation=interp)
        assert back.array.dtype == np.uint8
        np.testing.assert_array_equal(back.array, source.array)
        assert back.spacing == source.spacing and back.origin == source.origin


def source_spacing_after_lps(volume: Volume) -> tuple[float, float, float]:
    return reorient(volume, "LPS").spacing


def test_reorient_keeps_every_voxel_at_its_patient_position():
    source = _volume(_labels(), SAGITTAL)
    lps = reorient(source, "LPS")
    # source (k, j, i) = (17, 23, 29): i' (L) = old k, j' (P) = old i, k' (S) = old j
    assert lps.array.shape == (23, 29, 17)
    np.testing.assert_allclose(lps.direction, np.eye(3), atol=1e-12)
    rng = np.random.default_rng(1)
    for _ in range(20):
        ijk = rng.integers(0, source.shape_ijk)
        xyz = source.index_to_patient(ijk)
        ijk2 = np.rint(lps.patient_to_index(xyz)).astype(int)
        assert source.array[ijk[2], ijk[1], ijk[0]] == lps.array[ijk2[2], ijk2[1], ijk2[0]]


def test_same_grid_is_not_interpolated():
    source = _volume(np.random.default_rng(2).normal(size=(5, 6, 7)).astype(np.float32))
    out = resample(source, spacing=source.spacing, interpolation="bspline")
    assert out.array is source.array
    assert out.origin == source.origin


def test_down_and_up_sampling_keeps_the_field_of_view_and_the_object():
    zz, yy, xx = np.mgrid[0:60, 0:64, 0:64]
    ball = ((xx - 30.5) ** 2 + (yy - 33) ** 2 + (zz - 28) ** 2 <= 15**2).astype(np.uint8)
    source = _volume(ball, RAS, spacing=(1.0, 1.0, 1.0))
    coarse = resample(source, spacing=(2.5, 2.5, 2.5), direction="LPS", interpolation="linear")
    assert coarse.shape_ijk == (26, 26, 24)  # 64 mm / 2.5 rounded, 60 / 2.5
    centre = lambda v: v.index_to_patient(np.array(v.shape_ijk) / 2 - 0.5)  # noqa: E731
    np.testing.assert_allclose(centre(coarse), centre(source), atol=1e-9)
    back = resample_like(coarse.with_array((coarse.array > 0.5).astype(np.uint8)), source,
                         interpolation="label_linear").array.astype(bool)
    ref = ball.astype(bool)
    dice = 2 * (back & ref).sum() / (back.sum() + ref.sum())
    assert dice > 0.95
    com = lambda m: np.array(np.nonzero(m)).mean(axis=1)  # noqa: E731
    np.testing.assert_allclose(com(back), com(ref), atol=0.3)


def test_resize_to_a_fixed_size_keeps_the_extent():
    source = _volume(np.zeros((10, 100, 80), np.float32), spacing=(0.5, 0.5, 3.0))
    out = resample(source, spacing=(None, None, 3.0), size=(64, 64, 10))
    assert out.shape_ijk == (64, 64, 10)
    np.testing.assert_allclose(out.spacing, (40 / 64, 50 / 64, 3.0))
    assert out.origin[2] == pytest.approx(source.origin[2])


def test_outside_voxels_get_the_default_value():
    source = _volume(np.full((4, 4, 4), 7.0, np.float32), spacing=(1.0, 1.0, 1.0))
    bigger = Volume(np.zeros((4, 4, 8), np.float32), (1.0, 1.0, 1.0), (8.0, 0.0, 0.0))
    out = resample_like(source, bigger, interpolation="linear", default_value=-1024)
    assert (out.array == -1024).all()


def test_bad_orientation_code_is_rejected():
    with pytest.raises(ValueError, match="orientation 'LPL'"):
        reorient(_volume(_labels()), "LPL")
