"""Single-frame series: sort order, geometry (axial, reversed, oblique, anisotropic), rescale."""

from __future__ import annotations

import random
import tracemalloc

import numpy as np
import pydicom
import pytest
from support.series import field_on_grid, linear_field, position_of, rotation

from node.imaging import load_series
from node.synthetic import SeriesGeometry, write_series

SMALL = SeriesGeometry(rows=24, columns=32, slices=9, pixel_spacing=(1.0, 1.0),
                       slice_spacing=2.0, origin=(-16.0, -12.0, 40.0))


def test_shuffled_files_are_sorted_along_the_normal(tmp_path):
    paths = write_series(tmp_path, SMALL, linear_field)
    shuffled = paths[:]
    random.Random(7).shuffle(shuffled)
    assert shuffled != paths
    volume = load_series(shuffled)
    assert [s.path for s in volume.sources] == [str(p) for p in paths]
    assert volume.array.shape == (9, 24, 32)
    assert volume.array.dtype == np.float32
    assert volume.spacing == pytest.approx((1.0, 1.0, 2.0))
    assert volume.origin == pytest.approx((-16.0, -12.0, 40.0))
    np.testing.assert_array_equal(volume.direction, np.eye(3))
    np.testing.assert_array_equal(volume.array, field_on_grid(volume, linear_field))
    uids = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in paths]
    assert [s.sop_instance_uid for s in volume.sources] == uids
    assert all(s.frame_number is None for s in volume.sources)
    assert volume.modality == "CT"
    assert volume.frame_of_reference_uid == pydicom.dcmread(paths[0]).FrameOfReferenceUID


def test_descending_positions_give_an_ascending_k_axis(tmp_path):
    geometry = SeriesGeometry(rows=16, columns=16, slices=6, pixel_spacing=(1.0, 1.0),
                              slice_spacing=-3.0, origin=(0.0, 0.0, 100.0))
    paths = write_series(tmp_path, geometry, linear_field)
    volume = load_series(paths)
    assert volume.spacing[2] == pytest.approx(3.0)
    assert volume.origin == pytest.approx((0.0, 0.0, 85.0))  # the lowest slice comes first
    assert [s.path for s in volume.sources] == [str(p) for p in reversed(paths)]
    np.testing.assert_array_equal(volume.array, field_on_grid(volume, linear_field))


def test_oblique_series_maps_every_slice_to_its_position(tmp_path):
    r = rotation(30.0, 30.0)
    geometry = SeriesGeometry(rows=20, columns=28, slices=7, pixel_spacing=(0.7, 0.9),
                              slice_spacing=2.5, origin=(-20.0, -30.0, 10.0),
                              orientation=(*r[:, 0], *r[:, 1]))
    paths = write_series(tmp_path, geometry, linear_field, rescale_intercept=0.0)
    random.Random(3).shuffle(paths)
    volume = load_series(paths)
    np.testing.assert_allclose(volume.direction, r, atol=1e-5)
    assert volume.spacing == pytest.approx((0.9, 0.7, 2.5), abs=1e-4)
    assert volume.origin == pytest.approx(tuple(geometry.position(0)), abs=1e-3)
    for k, source in enumerate(volume.sources):
        np.testing.assert_allclose(volume.index_to_patient([0, 0, k]), position_of(source.path),
                                   atol=2e-3)
    # Stored values were rounded to integers from the field at each pixel centre.
    assert np.max(np.abs(volume.array - field_on_grid(volume, linear_field))) <= 0.5 + 1e-3


def test_anisotropic_spacing_is_taken_from_positions_not_slice_thickness(tmp_path):
    geometry = SeriesGeometry(rows=12, columns=10, slices=5, pixel_spacing=(0.5, 0.8),
                              slice_spacing=4.0, origin=(0.0, 0.0, 0.0))
    paths = write_series(tmp_path, geometry, 0.0, extra={"SliceThickness": "1.5"})
    volume = load_series(paths)
    assert volume.spacing == pytest.approx((0.8, 0.5, 4.0))  # (i, j, k); DICOM gives (row, col)
    assert volume.array.shape == (5, 12, 10)


def test_rescale_slope_and_intercept_are_applied(tmp_path):
    paths = write_series(tmp_path, SMALL, linear_field, rescale_intercept=-500.0,
                         extra={"RescaleSlope": "2.5"})
    volume = load_series(paths)
    stored = np.rint(field_on_grid(volume, linear_field) + 500.0)
    np.testing.assert_allclose(volume.array, 2.5 * stored - 500.0, rtol=0, atol=1e-3)


def test_single_slice_uses_slice_thickness_for_its_depth(tmp_path):
    geometry = SeriesGeometry(rows=8, columns=8, slices=1, slice_spacing=3.0)
    volume = load_series(write_series(tmp_path, geometry, 10.0))
    assert volume.array.shape == (1, 8, 8)
    assert volume.spacing[2] == pytest.approx(3.0)
    assert float(volume.array[0, 0, 0]) == 10.0


def test_300_slices_peak_memory_stays_near_the_output(tmp_path):
    geometry = SeriesGeometry(rows=128, columns=128, slices=300, slice_spacing=1.0)
    paths = write_series(tmp_path, geometry, 40.0)
    random.Random(1).shuffle(paths)
    tracemalloc.start()
    try:
        volume = load_series(paths)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert volume.array.shape == (300, 128, 128)
    assert peak < 1.5 * volume.array.nbytes
    assert np.all(volume.array == 40.0)
    assert volume.spacing[2] == pytest.approx(1.0)
