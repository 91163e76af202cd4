"""measure_region on analytic shapes, on anisotropic and oblique grids."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from support.phantoms import (
    ANISO_SPACING,
    centre_of,
    ellipsoid,
    grid,
    oblique_direction,
    patient_coords,
    rotation,
    sphere,
)

from node.imaging.volume import Volume
from node.measure import RegionMeasurements, geometry, measure_region

MAX_SPACING = max(ANISO_SPACING)
HALF_VOXEL = 0.5 * min(ANISO_SPACING)


def lps_extent(volume: Volume) -> np.ndarray:
    """How far one voxel box reaches along each LPS axis (x, y, z), in mm."""
    return np.abs(volume.direction) @ np.asarray(volume.spacing)


def assert_sphere(m: RegionMeasurements, vol: Volume, centre: np.ndarray, radius: float) -> None:
    analytic_ml = 4 / 3 * math.pi * radius**3 / 1000
    assert m.volume_ml == pytest.approx(analytic_ml, rel=0.02)
    assert m.voxel_count == round(m.volume_ml * 1000 / vol.voxel_volume_mm3)
    assert m.max_diameter_mm == pytest.approx(2 * radius, abs=MAX_SPACING)
    assert np.linalg.norm(np.subtract(m.centroid_lps, centre)) < HALF_VOXEL
    lo, hi = np.array(m.bbox_lps)
    ext = lps_extent(vol)
    np.testing.assert_array_less(np.abs(lo - (centre - radius)), ext)
    np.testing.assert_array_less(np.abs(hi - (centre + radius)), ext)


@pytest.mark.parametrize("radius", [6.0, 11.5, 17.0])
def test_sphere_on_oblique_anisotropic_grid(radius: float) -> None:
    vol = grid((110, 90, 34))
    centre = centre_of(vol, (0.45, 0.55, 0.5)) + np.array([0.31, -0.17, 0.42])
    m = measure_region(vol, sphere(vol, centre, radius))
    assert_sphere(m, vol, centre, radius)
    # The diameter end points lie on the sphere (within a voxel) and are the diameter apart.
    a, b = np.array(m.diameter_endpoints_lps)
    assert np.linalg.norm(a - b) == pytest.approx(m.max_diameter_mm)
    for p in (a, b):
        assert np.linalg.norm(p - centre) == pytest.approx(radius, abs=MAX_SPACING)


def test_axis_aligned_grid_with_identity_direction() -> None:
    vol = grid((60, 50, 20), direction=np.eye(3), origin=(10.0, -20.0, 30.0))
    centre = centre_of(vol, (0.5, 0.5, 0.5))
    m = measure_region(vol, sphere(vol, centre, 9.0))
    assert_sphere(m, vol, centre, 9.0)


def test_rotated_ellipsoid_volume_and_long_axis() -> None:
    vol = grid((130, 110, 40))
    centre = centre_of(vol, (0.5, 0.5, 0.5))
    axes = rotation("y", 40.0) @ rotation("z", -15.0)  # not aligned with the grid
    semi = (22.0, 9.0, 6.0)
    m = measure_region(vol, ellipsoid(vol, centre, semi, axes))
    assert m.volume_ml == pytest.approx(4 / 3 * math.pi * np.prod(semi) / 1000, rel=0.02)
    assert m.max_diameter_mm == pytest.approx(2 * semi[0], abs=MAX_SPACING)
    assert np.linalg.norm(np.subtract(m.centroid_lps, centre)) < HALF_VOXEL
    # The diameter runs along the long axis.
    a, b = np.array(m.diameter_endpoints_lps)
    cos = abs(np.dot((a - b) / np.linalg.norm(a - b), axes[:, 0]))
    assert cos > 0.99
    # The LPS box of an ellipsoid: half-width along x is sqrt(sum_a (R[x, a] * semi_a)^2).
    half = np.sqrt(((axes * np.asarray(semi)[None, :]) ** 2).sum(axis=1))
    lo, hi = np.array(m.bbox_lps)
    np.testing.assert_array_less(np.abs(lo - (centre - half)), lps_extent(vol))
    np.testing.assert_array_less(np.abs(hi - (centre + half)), lps_extent(vol))


def test_wrong_geometry_fails_the_analytic_checks() -> None:
    """The checks above can fail: the same voxels on a grid without spacing or direction."""
    vol = grid((110, 90, 34))
    centre = centre_of(vol, (0.5, 0.5, 0.5))
    radius = 11.5
    mask = sphere(vol, centre, radius)
    no_direction = Volume(vol.array, vol.spacing, vol.origin, np.eye(3), "CT")
    no_spacing = Volume(vol.array, (1.0, 1.0, 1.0), vol.origin, vol.direction, "CT")
    for wrong in (no_direction, no_spacing):
        with pytest.raises(AssertionError):
            assert_sphere(measure_region(wrong, mask), vol, centre, radius)
    # With spacing ignored the diameter and the volume are both far off.
    m = measure_region(no_spacing, mask)
    assert abs(m.max_diameter_mm - 2 * radius) > MAX_SPACING


def test_bbox_is_the_box_around_every_voxel_corner() -> None:
    vol = grid((40, 30, 12))
    rng = np.random.default_rng(3)
    mask = np.zeros(vol.array.shape, dtype=bool)
    mask[3:9, 5:25, 10:30] = rng.random((6, 20, 20)) < 0.3
    m = measure_region(vol, mask, [])
    kji = np.argwhere(mask)
    corners = kji[:, None, ::-1] + np.array(np.meshgrid(*[[-0.5, 0.5]] * 3)).reshape(3, -1).T
    xyz = vol.index_to_patient(corners.reshape(-1, 3))
    np.testing.assert_allclose(m.bbox_lps[0], xyz.min(axis=0), atol=1e-9)
    np.testing.assert_allclose(m.bbox_lps[1], xyz.max(axis=0), atol=1e-9)
    ijk = kji[:, ::-1]
    assert m.bbox_index == (tuple(ijk.min(axis=0)), tuple(ijk.max(axis=0)))
    np.testing.assert_allclose(m.centroid_lps, vol.index_to_patient(ijk.mean(axis=0)), atol=1e-9)


def brute_force_diameter(vol: Volume, mask: np.ndarray) -> float:
    x = vol.index_to_patient(np.argwhere(mask)[:, ::-1])
    return float(np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=-1).max()))


def sitk_feret(vol: Volume, mask: np.ndarray) -> float:
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.SetSpacing(vol.spacing)
    img.SetOrigin(vol.origin)
    img.SetDirection(vol.direction.ravel().tolist())
    f = sitk.LabelShapeStatisticsImageFilter()
    f.ComputeFeretDiameterOn()
    f.Execute(img)
    return f.GetFeretDiameter(1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_diameter_matches_brute_force_and_simpleitk_on_irregular_blobs(seed: int) -> None:
    vol = grid((40, 36, 14))
    rng = np.random.default_rng(seed)
    mask = np.zeros(vol.array.shape, dtype=bool)
    for _ in range(4):  # a few overlapping random boxes: concave, irregular
        lo = rng.integers(0, [8, 20, 20])
        size = rng.integers(2, [6, 16, 16])
        mask[lo[0] : lo[0] + size[0], lo[1] : lo[1] + size[1], lo[2] : lo[2] + size[2]] = True
    mask &= rng.random(mask.shape) < 0.8
    m = measure_region(vol, mask, ["max_diameter"])
    assert m.max_diameter_mm == pytest.approx(brute_force_diameter(vol, mask), abs=1e-9)
    assert m.max_diameter_mm == pytest.approx(sitk_feret(vol, mask), abs=1e-6)


def test_large_region_takes_the_direction_reduction_and_stays_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vol = grid((150, 130, 50), spacing=(0.8, 0.8, 1.5))
    centre = centre_of(vol, (0.5, 0.5, 0.5))
    axes = rotation("x", 20.0) @ rotation("y", 10.0)
    mask = ellipsoid(vol, centre, (52.0, 40.0, 30.0), axes)
    assert len(geometry.hull_candidates(mask)) > geometry.EXACT_LIMIT
    m = measure_region(vol, mask, ["max_diameter"])
    assert m.max_diameter_mm == pytest.approx(104.0, abs=1.5)
    monkeypatch.setattr(geometry, "EXACT_LIMIT", 10**6)  # every candidate pair
    exact = measure_region(vol, mask, ["max_diameter"]).max_diameter_mm
    assert m.max_diameter_mm <= exact
    assert m.max_diameter_mm == pytest.approx(exact, rel=0.0025)


def test_single_voxel_region() -> None:
    vol = grid((10, 10, 10))
    mask = np.zeros(vol.array.shape, dtype=bool)
    mask[4, 5, 6] = True  # k, j, i
    m = measure_region(vol, mask)
    assert m.voxel_count == 1
    assert m.volume_ml == pytest.approx(vol.voxel_volume_mm3 / 1000)
    assert m.max_diameter_mm == 0.0
    np.testing.assert_allclose(m.centroid_lps, vol.index_to_patient([6, 5, 4]))
    assert m.bbox_index == ((6, 5, 4), (6, 5, 4))
    np.testing.assert_allclose(np.subtract(m.bbox_lps[1], m.bbox_lps[0]), lps_extent(vol))


def test_intensity_statistics_of_a_linear_field() -> None:
    """Over a ball, a linear field has mean f(centre) and range f(centre) +- |grad| R."""
    vol = grid((100, 90, 34))
    centre = centre_of(vol, (0.5, 0.5, 0.5))
    grad = np.array([2.0, -1.0, 0.5])  # per mm
    field = (patient_coords(vol) - centre) @ grad + 40.0
    vol = vol.with_array(field.astype(np.float32))
    radius = 12.0
    mask = sphere(vol, centre, radius)
    m = measure_region(vol, mask, ["mean", "std", "min", "max"])
    g = np.linalg.norm(grad)
    step = g * MAX_SPACING  # the field changes at most this much across one voxel
    assert m.mean == pytest.approx(40.0 + grad @ (np.array(m.centroid_lps) - centre), abs=1e-3)
    assert m.mean == pytest.approx(40.0, abs=g * HALF_VOXEL)
    assert m.min == pytest.approx(40.0 - g * radius, abs=step)
    assert m.max == pytest.approx(40.0 + g * radius, abs=step)
    # std of a linear field over a ball: |grad| R / sqrt(5).
    assert m.std == pytest.approx(g * radius / math.sqrt(5), rel=0.02)
    assert all(type(x) is float for x in (m.mean, m.std, m.min, m.max))


def test_hounsfield_statistics_of_two_half_balls() -> None:
    vol = grid((80, 70, 30))
    centre = centre_of(vol, (0.5, 0.5, 0.5))
    mask = sphere(vol, centre, 10.0)
    left = (patient_coords(vol) - centre)[..., 0] > 0  # +x is patient left in LPS
    vol.array[mask & left] = 40
    vol.array[mask & ~left] = -960
    m = measure_region(vol, mask, ["mean", "min", "max"])
    n_left = np.count_nonzero(mask & left)
    expected = (40 * n_left - 960 * (m.voxel_count - n_left)) / m.voxel_count
    assert m.mean == pytest.approx(expected)
    assert m.mean == pytest.approx(-460, abs=25)  # about half and half
    assert (m.min, m.max) == (-960.0, 40.0)
    assert m.std is None  # not asked for
    assert m.intensity_unit == "[hnsf'U]"


def test_fraction_below_and_above_and_percentile() -> None:
    vol = grid((10, 10, 10))
    mask = np.zeros(vol.array.shape, dtype=bool)
    mask[1:9, 1:9, 1:9] = True  # 512 voxels; everything else is -2000 and must not count
    vol.array[:] = -2000
    values = np.full(512, -800, dtype=np.int16)
    values[:128] = -1000  # 25 % clearly below
    values[128:192] = -950  # 12.5 % at the threshold: not strictly below
    values[192:256] = -951  # 12.5 % just below
    np.random.default_rng(0).shuffle(values)
    vol.array[mask] = values
    reqs = [
        {"kind": "fraction_below", "threshold": -950, "name": "LAA-950"},
        {"kind": "fraction_above", "threshold": -900},
        {"kind": "percentile", "q": 15},
        {"kind": "percentile", "q": 50, "name": "median"},
    ]
    m = measure_region(vol, mask, reqs)
    assert m.value("LAA-950") == pytest.approx(37.5)
    assert m.value("fraction_above_-900") == pytest.approx(50.0)
    assert m.value("percentile_15") == pytest.approx(-1000.0)
    assert m.value("median") == pytest.approx((-950 + -800) / 2)  # sorted[255], sorted[256]
    assert [d.unit for d in m.derived] == ["%", "%", "[hnsf'U]", "[hnsf'U]"]
    assert [d.name for d in m.derived] == [
        "LAA-950",
        "fraction_above_-900",
        "percentile_15",
        "median",
    ]
    assert m.mean is None and m.max_diameter_mm is None  # only what was asked


def test_percentile_matches_numpy_on_random_values() -> None:
    vol = grid((30, 30, 10))
    rng = np.random.default_rng(5)
    vol.array[:] = rng.integers(-1024, 1500, vol.array.shape)
    mask = rng.random(vol.array.shape) < 0.3
    m = measure_region(vol, mask, [{"kind": "percentile", "q": 15}, "mean", "std"])
    values = vol.array[mask].astype(np.float64)
    assert m.value("percentile_15") == pytest.approx(np.percentile(values, 15))
    assert m.mean == pytest.approx(values.mean())
    assert m.std == pytest.approx(values.std())


def test_empty_mask_is_defined() -> None:
    vol = grid((20, 20, 8))
    reqs = ["mean", "max_diameter", {"kind": "fraction_below", "threshold": -950, "name": "LAA"}]
    m = measure_region(vol, np.zeros(vol.array.shape, dtype=bool), reqs, label=3)
    assert m.is_empty and m.voxel_count == 0 and m.volume_ml == 0.0 and m.label == 3
    assert m.centroid_lps is None and m.bbox_lps is None and m.bbox_index is None
    assert m.mean is None and m.max_diameter_mm is None
    assert m.value("LAA") is None
    d = json.loads(json.dumps(m.to_dict()))
    assert d["volume_ml"] == 0.0 and d["derived"][0]["value"] is None


def test_to_dict_is_json_with_python_numbers() -> None:
    vol = grid((40, 40, 12))
    mask = sphere(vol, centre_of(vol, (0.5, 0.5, 0.5)), 5.0)
    m = measure_region(vol, mask, ["mean", "max_diameter", {"kind": "percentile", "q": 10}])
    d = m.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert type(d["volume_ml"]) is float and type(d["voxel_count"]) is int
    assert all(type(x) is float for x in d["centroid_lps"] + d["bbox_lps"][0])
    assert m.value("volume") == m.volume_ml and m.value("percentile_10") is not None
    with pytest.raises(KeyError):
        m.value("nonsense")


def test_mask_on_another_grid_is_rejected() -> None:
    vol = grid((10, 10, 10))
    with pytest.raises(ValueError, match="shape"):
        measure_region(vol, np.zeros((10, 10, 9), dtype=bool))
    other = Volume(
        np.zeros((10, 10, 10), np.uint8), vol.spacing, (0.0, 0.0, 0.0), oblique_direction()
    )
    with pytest.raises(ValueError, match="grid"):
        measure_region(vol, other)
