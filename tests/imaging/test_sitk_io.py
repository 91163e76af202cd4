"""Volume <-> SimpleITK and NIfTI round trips keep voxels and geometry."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from support.series import rotation

from node.imaging import VolumeError
from node.imaging.sitk_io import from_sitk, load_nifti, to_sitk
from node.imaging.volume import SliceSource, Volume


def _volume() -> Volume:
    rng = np.random.default_rng(0)
    return Volume(
        array=rng.normal(size=(5, 6, 7)).astype(np.float32),
        spacing=(0.7, 0.9, 2.5),
        origin=(-10.0, 20.0, 30.0),
        direction=rotation(30.0, 30.0),
        modality="MR",
        sources=[SliceSource("x", "1.2.3", None)],
    )


def test_to_sitk_and_back():
    volume = _volume()
    image = to_sitk(volume)
    assert image.GetSize() == (7, 6, 5)
    assert image.GetSpacing() == pytest.approx(volume.spacing)
    # SimpleITK maps an index to the same patient point as Volume does.
    point = image.TransformContinuousIndexToPhysicalPoint((1.5, 2.0, 3.25))
    np.testing.assert_allclose(point, volume.index_to_patient([1.5, 2.0, 3.25]), atol=1e-9)
    back = from_sitk(image, modality="MR", sources=volume.sources)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-12)
    assert back.origin == pytest.approx(volume.origin)
    assert back.modality == "MR" and back.sources == volume.sources


def test_nifti_round_trip(tmp_path):
    volume = _volume()
    path = tmp_path / "v.nii.gz"
    sitk.WriteImage(to_sitk(volume), str(path))
    back = load_nifti(path)
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.spacing == pytest.approx(volume.spacing, abs=1e-5)
    assert back.origin == pytest.approx(volume.origin, abs=1e-4)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-5)


def test_nifti_keeps_integer_voxels_when_asked(tmp_path):
    labels = Volume(array=np.arange(24, dtype=np.uint8).reshape(2, 3, 4), spacing=(1, 1, 1),
                    origin=(0, 0, 0))
    path = tmp_path / "labels.nii"
    sitk.WriteImage(to_sitk(labels), str(path))
    assert load_nifti(path).array.dtype == np.float32
    kept = load_nifti(path, dtype=None)
    assert kept.array.dtype == np.uint8
    np.testing.assert_array_equal(kept.array, labels.array)


def test_2d_image_becomes_one_slice():
    image = sitk.GetImageFromArray(np.ones((3, 4), dtype=np.int16))
    image.SetSpacing((0.5, 0.25))
    volume = from_sitk(image)
    assert volume.array.shape == (1, 3, 4)
    assert volume.spacing == (0.5, 0.25, 1.0)


def test_4d_and_vector_images_are_refused():
    with pytest.raises(VolumeError, match="4D"):
        from_sitk(sitk.Image([2, 2, 2, 2], sitk.sitkFloat32))
    with pytest.raises(VolumeError, match="components"):
        from_sitk(sitk.Image([2, 2, 2], sitk.sitkVectorFloat32, 3))


def test_unreadable_nifti(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"not a nifti")
    with pytest.raises(VolumeError, match="could not be read"):
        load_nifti(path)
