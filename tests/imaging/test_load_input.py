"""load_input: a folder, one DICOM file, or NIfTI; several series in a folder are refused."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from node.imaging import VolumeError, load_input
from node.imaging.sitk_io import to_sitk
from node.synthetic import SeriesGeometry, write_series

GEOMETRY = SeriesGeometry(rows=8, columns=8, slices=4, pixel_spacing=(1.0, 1.0))


def test_folder_with_one_series_and_clutter(tmp_path):
    paths = write_series(tmp_path / "series", GEOMETRY, 7.0)
    (tmp_path / "series" / "README.txt").write_text("notes")
    (tmp_path / "series" / ".DS_Store").write_bytes(b"\0" * 200)
    volume = load_input(tmp_path)
    assert volume.array.shape == (4, 8, 8)
    assert [s.path for s in volume.sources] == [str(p) for p in paths]


def test_folder_with_several_series_names_the_count(tmp_path):
    write_series(tmp_path / "a", GEOMETRY, 0.0)
    write_series(tmp_path / "b", GEOMETRY, 0.0)
    write_series(tmp_path / "c", GEOMETRY, 0.0)
    with pytest.raises(VolumeError, match="3 series found"):
        load_input(tmp_path)


def test_one_dicom_file(tmp_path):
    path = write_series(tmp_path, GEOMETRY, 5.0)[2]
    volume = load_input(path)
    assert volume.array.shape == (1, 8, 8)
    assert volume.origin[2] == pytest.approx(2.0)


def test_nifti_file(tmp_path):
    from node.imaging.volume import Volume

    volume = Volume(array=np.full((2, 3, 4), 3.0, dtype=np.float32), spacing=(1, 2, 3),
                    origin=(0, 0, 0))
    path = tmp_path / "image.nii.gz"
    sitk.WriteImage(to_sitk(volume), str(path))
    loaded = load_input(path)
    assert loaded.spacing == pytest.approx((1.0, 2.0, 3.0))
    np.testing.assert_array_equal(loaded.array, volume.array)


def test_empty_folder_and_missing_path(tmp_path):
    with pytest.raises(VolumeError, match="no DICOM files"):
        load_input(tmp_path)
    with pytest.raises(VolumeError, match="does not exist"):
        load_input(tmp_path / "nothing")
