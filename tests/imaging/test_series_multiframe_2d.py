"""Enhanced multi-frame objects (per-frame functional groups) and single 2D projection images."""

from __future__ import annotations

import random

import numpy as np
import pydicom
import pytest
from support.series import field_on_grid, rotation

from node.imaging import VolumeError, load_series
from node.synthetic import SeriesGeometry, write_enhanced, write_projection, write_series

GEOMETRY = SeriesGeometry(rows=20, columns=24, slices=10, pixel_spacing=(0.8, 1.2),
                          slice_spacing=1.5, origin=(-10.0, -12.0, 5.0))


def even_field(x, y, z):
    """Integer-valued on GEOMETRY's axial grid and even, so slope 2 stores it exactly."""
    return 2.0 * np.rint(x / 1.2 + 3.0 * y / 0.8 + 7.0 * z / 1.5)


def test_enhanced_ct_frames_out_of_order_with_per_frame_rescale(tmp_path):
    order = list(range(GEOMETRY.slices))
    random.Random(5).shuffle(order)
    slopes = [2.0 if k % 2 else 1.0 for k in range(GEOMETRY.slices)]
    path = write_enhanced(tmp_path / "enhanced.dcm", GEOMETRY, even_field, frame_order=order,
                          slopes=slopes, rescale_intercept=-1000.0)
    volume = load_series([path])
    assert volume.array.shape == (10, 20, 24)
    assert volume.spacing == pytest.approx((1.2, 0.8, 1.5))
    assert volume.origin == pytest.approx((-10.0, -12.0, 5.0))
    np.testing.assert_array_equal(volume.array, field_on_grid(volume, even_field))
    assert [s.frame_number for s in volume.sources] == [order.index(k) + 1 for k in range(10)]
    uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    assert {s.sop_instance_uid for s in volume.sources} == {uid}
    assert volume.modality == "CT"


def test_enhanced_mr_with_per_frame_oblique_orientation_and_no_rescale(tmp_path):
    r = rotation(20.0, -35.0)
    geometry = SeriesGeometry(rows=16, columns=16, slices=6, pixel_spacing=(1.0, 1.0),
                              slice_spacing=3.0, origin=(5.0, 6.0, 7.0),
                              orientation=(*r[:, 0], *r[:, 1]))
    path = write_enhanced(tmp_path / "mr.dcm", geometry, 123.0, modality="MR",
                          frame_order=[5, 4, 3, 2, 1, 0], per_frame_orientation=True,
                          with_transformation=False)
    volume = load_series([path])
    np.testing.assert_allclose(volume.direction, r, atol=1e-5)
    assert volume.origin == pytest.approx(tuple(geometry.position(0)), abs=1e-3)
    assert [s.frame_number for s in volume.sources] == [6, 5, 4, 3, 2, 1]
    assert np.all(volume.array == 123.0)
    assert volume.modality == "MR"


def test_enhanced_frames_equal_the_single_frame_series(tmp_path):
    single = load_series(write_series(tmp_path / "single", GEOMETRY, even_field))
    enhanced = load_series([write_enhanced(tmp_path / "e.dcm", GEOMETRY, even_field)])
    np.testing.assert_array_equal(enhanced.array, single.array)
    assert enhanced.spacing == single.spacing
    assert enhanced.origin == single.origin


def test_enhanced_with_repeated_positions_is_refused(tmp_path):
    """Two temporal positions of the same stack in one object: not one volume."""
    geometry = SeriesGeometry(rows=8, columns=8, slices=4, pixel_spacing=(1.0, 1.0))
    path = write_enhanced(tmp_path / "4d.dcm", geometry, 0.0, frame_order=[0, 1, 2, 3, 0, 1, 2, 3])
    with pytest.raises(VolumeError, match="duplicate slice positions"):
        load_series([path])


def test_multiframe_without_positions_is_refused(tmp_path):
    geometry = SeriesGeometry(rows=8, columns=8, slices=1, pixel_spacing=(1.0, 1.0))
    path = write_series(tmp_path, geometry, 0.0)[0]
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 3
    ds.PixelData = ds.PixelData * 3
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(VolumeError, match="no per-frame plane positions"):
        load_series([path])


def _gradient(rows=30, columns=40, top=4095):
    return np.rint(np.linspace(0, top, rows * columns)).reshape(rows, columns)


def test_monochrome1_cr_is_inverted_so_higher_is_brighter(tmp_path):
    image = _gradient()
    path = write_projection(tmp_path / "cr.dcm", image, modality="CR", photometric="MONOCHROME1",
                            imager_pixel_spacing=(0.15, 0.1))
    stored = pydicom.dcmread(path).pixel_array
    assert stored[0, 0] == 4095 and stored[-1, -1] == 0  # darkest pixel stored highest
    volume = load_series([path])
    assert volume.array.shape == (1, 30, 40)
    np.testing.assert_array_equal(volume.array[0], image)
    assert volume.spacing == pytest.approx((0.1, 0.15, 1.0))
    assert volume.origin == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(volume.direction, np.eye(3))
    assert volume.modality == "CR"
    assert volume.sources[0].frame_number is None


@pytest.mark.parametrize("modality", ["DX", "MG"])
def test_monochrome2_projection_is_kept(tmp_path, modality):
    image = _gradient(top=1000)
    path = write_projection(tmp_path / "p.dcm", image, modality=modality,
                            photometric="MONOCHROME2")
    volume = load_series([path])
    np.testing.assert_array_equal(volume.array[0], image)
    assert volume.modality == modality


def test_monochrome1_inversion_keeps_the_rescaled_range(tmp_path):
    image = _gradient(top=4095)
    path = write_projection(tmp_path / "cr.dcm", image)
    ds = pydicom.dcmread(path)
    ds.RescaleSlope, ds.RescaleIntercept = "2", "-100"
    ds.save_as(path, enforce_file_format=True)
    volume = load_series([path])
    # stored s = 4095 - image; rescaled 2 s - 100 in [-100, 8090]; inverted: -100 + 8090 - that.
    np.testing.assert_array_equal(volume.array[0], 2.0 * image - 100.0)
