"""Real files: the JPEG 2000 CT series (blank dataset UIDs) against SimpleITK, and NIfTI."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from node.imaging import VolumeError, load_input, load_series
from node.imaging.inputs import dicom_files
from node.imaging.sitk_io import load_nifti


@pytest.fixture(scope="module")
def ct_folder(shared_data):
    return shared_data / "ct_abdomen_ts_dicom" / "dicom"


def test_jpeg2000_series_matches_simpleitk_voxel_for_voxel(ct_folder):
    files = dicom_files(ct_folder)
    assert len(files) == 20
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    volume = load_series(files)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(ct_folder)))
    reference = reader.Execute()
    np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(reference))
    assert volume.spacing == pytest.approx(reference.GetSpacing())
    assert volume.origin == pytest.approx(reference.GetOrigin())
    np.testing.assert_allclose(volume.direction.ravel(), reference.GetDirection(), atol=1e-9)

    assert volume.array.shape == (20, 512, 512)
    assert volume.spacing == pytest.approx((0.9765625, 0.9765625, 2.0))  # not SliceThickness 3
    assert volume.origin == pytest.approx((-249.51171875, -437.51171875, -804.5))
    assert float(volume.array.min()) == -1024.0  # rescale intercept applied
    assert volume.modality == "CT"
    assert volume.frame_of_reference_uid.startswith("1.3.12.2.1107.5.1.4.60064.")


def test_blank_dataset_uids_fall_back_to_file_meta(ct_folder):
    volume = load_input(ct_folder)
    for k, source in enumerate(volume.sources):
        ds = pydicom.dcmread(source.path, stop_before_pixels=True)
        assert ds.SOPInstanceUID == ""
        assert source.sop_instance_uid == ds.file_meta.MediaStorageSOPInstanceUID
        assert float(ds.ImagePositionPatient[2]) == pytest.approx(-804.5 + 2.0 * k)


def test_nifti_matches_simpleitk(shared_data):
    path = shared_data / "ct_abdomen_ts_nifti" / "example_ct.nii.gz"
    volume = load_nifti(path)
    image = sitk.ReadImage(str(path))
    assert volume.array.shape == (112, 101, 122)
    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(image))
    assert volume.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert volume.origin == pytest.approx(image.GetOrigin())
    # The file stores RAS axes; in LPS they read as i toward right, j toward anterior.
    np.testing.assert_allclose(volume.direction, np.diag([-1.0, -1.0, 1.0]), atol=1e-6)
    assert load_input(path).array.shape == volume.array.shape


def test_implicit_vr_ct_matches_simpleitk(shared_data):
    folder = shared_data / "ct_abdomen_dcmqi_3slice" / "dicom_ct"
    volume = load_input(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    reference = reader.Execute()
    np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(reference))
    assert volume.spacing == pytest.approx((0.810547, 0.810547, 1.0), abs=1e-6)
    assert volume.origin == pytest.approx(reference.GetOrigin())


def test_real_refusals(shared_data):
    """A real CT with a 202 mm gap, folders of SEG/SR only, and the whole data folder."""
    cases = {
        "seg_sr_highdicom/referenced_ct_pydicom_CT2": "missing slices",
        "seg_sr_dcmjs": "no image objects among 3 files (1 SEG, 2 SR)",
        "seg_sr_qin_headneck_dcmqi": "no image objects among 3 files (1 RWV, 1 SEG, 1 SR)",
        ".": "series found where one is expected",
    }
    for folder, expected in cases.items():
        with pytest.raises(VolumeError) as caught:
            load_input(shared_data / folder)
        assert expected in caught.value.reason
