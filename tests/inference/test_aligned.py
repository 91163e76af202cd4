"""node/imaging/aligned.py: ``linear`` and ``label_linear`` onto grids with the same axes give
SimpleITK's values (label_linear: voxel for voxel but for exact ties), edges included, and step
aside for oblique grids;
node/inference/postprocess.py: axial hole filling in one call equals slice by slice."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk

from node.imaging.aligned import map_label_linear, map_linear
from node.imaging.resample import orientation_code, reorient, resample, resample_like
from node.imaging.sitk_io import to_sitk
from node.imaging.volume import Volume
from node.inference.postprocess import _image, fill_holes


def _sitk_label_linear(volume: Volume, reference: Volume, default: float = 0) -> np.ndarray:
    image = to_sitk(volume)
    f = sitk.ResampleImageFilter()
    f.SetReferenceImage(to_sitk(reference))
    f.SetInterpolator(sitk.sitkLabelLinear)
    f.SetDefaultPixelValue(default)
    f.SetOutputPixelType(image.GetPixelID())
    return sitk.GetArrayFromImage(f.Execute(image))


def _sitk_linear(volume: Volume, reference: Volume, default: float) -> np.ndarray:
    image = to_sitk(volume.with_array(volume.array.astype(np.float32)))
    f = sitk.ResampleImageFilter()
    f.SetReferenceImage(to_sitk(reference))
    f.SetInterpolator(sitk.sitkLinear)
    f.SetDefaultPixelValue(default)
    f.SetOutputPixelType(sitk.sitkFloat32)
    return sitk.GetArrayFromImage(f.Execute(image))


def _fast(volume: Volume, reference: Volume, default: float = 0) -> np.ndarray | None:
    reoriented = reorient(volume, orientation_code(reference.direction))
    return map_label_linear(volume, reference, reference.shape_ijk, default, reoriented)


def _label_values(source: Volume, reference: Volume, kji: tuple[int, int, int]
                  ) -> dict[int, float]:
    """Each label's interpolated indicator at one reference voxel, computed independently
    (trilinear weights at the continuous source index, edges clamped)."""
    c = source.patient_to_index(reference.index_to_patient(np.array(kji[::-1], float)))
    n = source.shape_ijk
    axes = []
    for a in range(3):
        lo = int(np.clip(np.floor(c[a]), 0, n[a] - 1))
        d = max(0.0, c[a] - lo)
        axes.append([(lo, 1.0 - d), (min(lo + 1, n[a] - 1), d)])
    values: dict[int, float] = {}
    for (i, wi), (j, wj), (k, wk) in itertools.product(*axes):
        label = int(source.array[k, j, i])
        values[label] = values.get(label, 0.0) + wi * wj * wk
    return values


def _assert_same_or_tie(got: np.ndarray, want: np.ndarray, source: Volume, reference: Volume
                        ) -> None:
    """Equal to SimpleITK, except at exact ties, where the smaller label must have won."""
    differ = np.argwhere(got != want)
    assert len(differ) <= max(1, got.size // 100), f"{len(differ)} voxels differ"
    for kji in map(tuple, differ):
        values = _label_values(source, reference, kji)
        top = max(values.values())
        assert abs(values.get(int(want[kji]), 0.0) - top) < 1e-9, (kji, values)
        assert int(got[kji]) == min(v for v, x in values.items() if abs(x - top) < 1e-9)


def _grid(size_ijk, spacing, origin, direction=None) -> Volume:
    return Volume(array=np.zeros(tuple(reversed(size_ijk)), np.uint8), spacing=spacing,
                  origin=origin, direction=np.eye(3) if direction is None else direction)


def _smooth_labels(shape, seed) -> np.ndarray:
    """Blobs rather than noise: regions of 4 labels with boundaries in every direction."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    a, b, c = rng.uniform(0.2, 0.6, 3)
    return ((a * k + b * j + c * i + rng.integers(0, 2, shape)) // 2 % 4).astype(np.uint8)


@pytest.mark.parametrize("seed", range(16))
def test_equals_simpleitk_on_permuted_flipped_sources(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(3, 12, 3))
    labels = (rng.integers(0, 4, shape).astype(np.uint8) if seed % 2
              else _smooth_labels(shape, seed))
    direction = np.eye(3)[:, rng.permutation(3)] * rng.choice([-1.0, 1.0], 3)
    source = Volume(array=labels, spacing=tuple(rng.uniform(1.5, 4, 3)),
                    origin=tuple(rng.uniform(-5, 5, 3)), direction=direction)
    # Finer, over the source and beyond it: the outside gets the default value.
    corners = source.index_to_patient(
        np.array(list(itertools.product(*[(-0.5, m - 0.5) for m in source.shape_ijk]))))
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    spacing = rng.uniform(0.3, 2, 3)
    size = np.ceil((hi - lo + 4) / spacing).astype(int) + 1
    reference = _grid(tuple(int(m) for m in size), tuple(spacing),
                      tuple(lo - rng.uniform(0.5, 2, 3)))
    want = _sitk_label_linear(source, reference, default=7)
    got = _fast(source, reference, default=7)
    assert got is not None and got.dtype == np.uint8
    assert (want == 7).any() and (want != 7).any()  # the case covers both
    _assert_same_or_tie(got, want, source, reference)


def test_ties_go_to_the_smaller_label_as_in_simpleitk():
    # Points exactly half-way between voxels of different labels.
    labels = np.array([[[3, 3, 1, 1, 2, 0]]], np.uint8)
    source = Volume(array=labels, spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                    direction=np.eye(3))
    reference = _grid((12, 1, 1), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    want = _sitk_label_linear(source, reference)
    got = _fast(source, reference)
    np.testing.assert_array_equal(got, want)
    # Source voxel centres at x = 0, 2, 4, ...; x = 3, 7, 9 are half-way between two labels.
    assert got[0, 0].tolist() == [3, 3, 3, 1, 1, 1, 1, 1, 2, 0, 0, 0]


def test_large_uint16_labels_and_a_two_label_cube():
    rng = np.random.default_rng(5)
    labels = np.zeros((9, 10, 11), np.uint16)
    labels[2:7, 3:8, 2:9] = 1000
    labels[4:6, 4:6, 4:6] = 65000
    labels[rng.random(labels.shape) < 0.05] = 7
    source = Volume(array=labels, spacing=(3.0, 3.0, 3.0), origin=(0.0, 0.0, 0.0),
                    direction=np.eye(3))
    reference = _grid((37, 33, 31), (0.8, 0.9, 1.0), (-1.2, -1.3, -1.4))
    got = _fast(source, reference)
    assert got is not None and got.dtype == np.uint16
    assert set(np.unique(got)) == {0, 7, 1000, 65000}
    _assert_same_or_tie(got, _sitk_label_linear(source, reference), source, reference)


def test_oblique_grid_is_left_to_simpleitk():
    c, s = np.cos(0.3), np.sin(0.3)
    rotated = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    source = Volume(array=_smooth_labels((6, 7, 8), 1), spacing=(2.0, 2.0, 2.0),
                    origin=(0.0, 0.0, 0.0), direction=np.eye(3))
    reference = _grid((20, 18, 12), (0.7, 0.7, 1.0), (1.0, 1.0, 0.0), rotated)
    assert _fast(source, reference) is None
    back = resample_like(source, reference, interpolation="label_linear")
    np.testing.assert_array_equal(back.array, _sitk_label_linear(source, reference))


def test_model_grid_round_trip_of_a_ct_like_volume():
    """512-ish source, 3 mm model grid in LPS from an RAS source, back with label_linear: the
    result is SimpleITK's, on the source grid exactly."""
    ras = np.diag([-1.0, -1.0, 1.0])
    source = Volume(array=np.zeros((40, 96, 96), np.float32), spacing=(0.8, 0.8, 1.0),
                    origin=(30.0, 40.0, -10.0), direction=ras)
    model = resample(source, spacing=(3.0, 3.0, 3.0), direction="LPS")
    labels = _smooth_labels(model.array.shape, 3)
    back = resample_like(model.with_array(labels), source, interpolation="label_linear")
    assert back.array.shape == source.array.shape
    assert back.spacing == source.spacing and back.origin == source.origin
    np.testing.assert_array_equal(back.direction, source.direction)
    want = _sitk_label_linear(model.with_array(labels), source)
    _assert_same_or_tie(back.array, want, model.with_array(labels), source)


def _random_source(rng: np.random.Generator, dtype) -> Volume:
    shape = tuple(int(n) for n in rng.integers(3, 12, 3))
    direction = np.eye(3)[:, rng.permutation(3)] * rng.choice([-1.0, 1.0], 3)
    values = rng.normal(0, 300, shape).astype(dtype)
    return Volume(array=values, spacing=tuple(rng.uniform(0.5, 4, 3)),
                  origin=tuple(rng.uniform(-5, 5, 3)), direction=direction)


@pytest.mark.parametrize("seed", range(12))
def test_linear_equals_simpleitk(seed):
    rng = np.random.default_rng(100 + seed)
    source = _random_source(rng, np.int16 if seed % 3 == 0 else np.float32)
    # Up- and down-sampling, partly outside the source.
    reference = _grid(tuple(int(n) for n in rng.integers(2, 25, 3)),
                      tuple(rng.uniform(0.3, 5, 3)), tuple(rng.uniform(-12, 2, 3)))
    want = _sitk_linear(source, reference, -1024.0)
    reoriented = reorient(source, orientation_code(reference.direction))
    got = map_linear(source, reference, reference.shape_ijk, -1024.0, reoriented)
    assert got is not None and got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(got == -1024.0, want == -1024.0)


def test_model_grid_of_a_ct_is_simpleitks_without_copying_the_source():
    """As preprocess makes it: RAS CT (a flipped view) to LPS at 3 mm, fill -1024."""
    rng = np.random.default_rng(7)
    ras = np.diag([-1.0, -1.0, 1.0])
    ct = Volume(array=rng.normal(-300, 400, (30, 64, 70)).astype(np.float32),
                spacing=(0.8, 0.75, 1.25), origin=(30.0, 40.0, -10.0), direction=ras)
    model = resample(ct, spacing=(3.0, 3.0, 3.0), direction="LPS", default_value=-1024.0)
    assert model.array.dtype == np.float32 and model.array.shape == (12, 16, 19)
    np.testing.assert_allclose(model.direction, np.eye(3), atol=1e-12)
    want = _sitk_linear(reorient(ct, "LPS"), model, -1024.0)
    np.testing.assert_allclose(model.array, want, rtol=0, atol=1e-3)
    # the same through SimpleITK from the original (unreoriented) CT
    np.testing.assert_allclose(model.array, _sitk_linear(ct, model, -1024.0), rtol=0, atol=1e-3)


def test_linear_leaves_oblique_grids_to_simpleitk():
    c, s = np.cos(0.3), np.sin(0.3)
    rotated = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    source = _random_source(np.random.default_rng(3), np.float32)
    reference = _grid((9, 8, 7), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), rotated)
    assert map_linear(source, reference, reference.shape_ijk, 0.0) is None
    out = resample_like(source, reference, interpolation="linear", default_value=-5.0)
    np.testing.assert_allclose(out.array, _sitk_linear(source, reference, -5.0), atol=1e-4)


def _fill_holes_slice_by_slice(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    for k in range(mask.shape[0]):
        if mask[k].any():
            out[k] = sitk.GetArrayFromImage(sitk.BinaryFillhole(_image(mask[k]))) > 0
    return out


@pytest.mark.parametrize("density", [0.3, 0.55, 0.7])
def test_axial_fill_holes_equals_slice_by_slice(density):
    mask = np.random.default_rng(int(density * 100)).random((12, 20, 17)) < density
    mask[3] = False  # an empty slice in between
    ring = np.zeros((20, 17), bool)
    ring[4:12, 4:12] = True
    ring[6:10, 6:10] = False  # one known hole
    mask[5] = ring
    filled = fill_holes(mask, axial=True)
    np.testing.assert_array_equal(filled, _fill_holes_slice_by_slice(mask))
    assert filled[5, 6:10, 6:10].all() and not filled[3].any()
    assert (filled >= mask).all() and (filled != mask).any()
