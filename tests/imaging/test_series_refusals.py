"""Every series that is not one regular volume is refused with a reason that names the problem."""

from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest
from pydicom.uid import MRImageStorage, SegmentationStorage, generate_uid
from support.series import copy_as_new_instance, edit

from node.imaging import VolumeError, load_series
from node.synthetic import SeriesGeometry, write_series

GEOMETRY = SeriesGeometry(rows=16, columns=16, slices=8, pixel_spacing=(1.0, 1.0),
                          slice_spacing=2.0, origin=(0.0, 0.0, 0.0))


def _refused(paths) -> str:
    with pytest.raises(VolumeError) as caught:
        load_series(paths)
    reason = caught.value.reason
    assert reason == str(caught.value)
    assert "Synthetic" not in reason and "SYNTH0001" not in reason  # never PHI
    return reason


@pytest.fixture
def series(tmp_path):
    return write_series(tmp_path / "a", GEOMETRY, 0.0)


def _same_series(path, first):
    """Attributes that make another write belong to the series of ``first``."""
    ds = pydicom.dcmread(first, stop_before_pixels=True)
    return {"study_uid": ds.StudyInstanceUID, "series_uid": ds.SeriesInstanceUID,
            "extra": {"FrameOfReferenceUID": ds.FrameOfReferenceUID}}


def test_mixed_orientations(tmp_path, series):
    sagittal = SeriesGeometry(rows=16, columns=16, slices=3, pixel_spacing=(1.0, 1.0),
                              orientation=(0, 1, 0, 0, 0, -1))
    more = write_series(tmp_path / "b", sagittal, 0.0, **_same_series(tmp_path, series[0]))
    assert "mixed orientations" in _refused(series + more)


def test_localizers_in_the_series_are_skipped(tmp_path, series):
    sagittal = SeriesGeometry(rows=16, columns=16, slices=1, pixel_spacing=(1.0, 1.0),
                              orientation=(0, 1, 0, 0, 0, -1))
    scout = write_series(tmp_path / "b", sagittal, 0.0, **_same_series(tmp_path, series[0]))
    edit(scout[0], ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    volume = load_series(series + scout)
    assert volume.array.shape[0] == len(series)


def test_mixed_sizes(tmp_path, series):
    bigger = SeriesGeometry(rows=20, columns=16, slices=2, pixel_spacing=(1.0, 1.0),
                            slice_spacing=2.0, origin=(0.0, 0.0, 16.0))
    more = write_series(tmp_path / "b", bigger, 0.0, **_same_series(tmp_path, series[0]))
    assert "mixed image sizes" in _refused(series + more)


def test_mixed_pixel_spacing(series):
    edit(series[3], PixelSpacing=["0.9", "0.9"])
    assert "mixed pixel spacing" in _refused(series)


def test_missing_slice(series):
    reason = _refused(series[:3] + series[4:])
    assert "missing slices" in reason and "about 1 slice" in reason


def test_uneven_spacing(series):
    edit(series[5], ImagePositionPatient=["0", "0", "10.4"])  # 10 -> 10.4: gaps 2.4 and 1.6
    assert "uneven slice spacing" in _refused(series)


def test_duplicate_positions(tmp_path, series):
    copy = copy_as_new_instance(series[2], tmp_path / "copy.dcm")
    assert "duplicate slice positions" in _refused([*series, copy])


def test_the_same_instance_twice(tmp_path, series):
    twin = tmp_path / "twin.dcm"
    twin.write_bytes(series[2].read_bytes())
    assert "repeat a SOP Instance UID" in _refused([*series, twin])


def test_no_pixel_data(series):
    edit(series[1], PixelData=None)
    assert "no pixel data" in _refused(series)


@pytest.mark.parametrize("degrees", [15.0, 2.0])
def test_gantry_tilt(series, degrees):
    for k, path in enumerate(series):
        shift = k * GEOMETRY.slice_spacing * math.tan(math.radians(degrees))
        edit(path, ImagePositionPatient=["0", f"{shift:.6f}", f"{k * 2.0:.6f}"])
    reason = _refused(series)
    assert "gantry tilt" in reason
    assert f"{degrees:.1f} degrees" in reason


def test_mixed_sop_classes(series):
    ds = pydicom.dcmread(series[4])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.save_as(series[4], enforce_file_format=True)
    assert "2 SOP classes" in _refused(series)


def test_two_series(tmp_path, series):
    other = write_series(tmp_path / "b", GEOMETRY, 0.0)
    assert "2 series" in _refused(series + other)


def test_two_frames_of_reference(series):
    edit(series[0], FrameOfReferenceUID=generate_uid())
    assert "2 frames of reference" in _refused(series)


def test_non_image_objects_are_skipped_but_not_alone(tmp_path, series):
    seg = copy_as_new_instance(series[0], tmp_path / "seg.dcm", Modality="SEG")
    ds = pydicom.dcmread(seg)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SegmentationStorage
    ds.save_as(seg, enforce_file_format=True)
    sr = _write_sr(tmp_path / "sr.dcm", series[0])
    volume = load_series([seg, *series, sr])
    assert volume.array.shape[0] == len(series)
    assert all(s.path != str(seg) for s in volume.sources)
    reason = _refused([seg, sr])
    assert "no image objects" in reason and "1 SEG" in reason and "1 SR" in reason


def test_not_dicom(tmp_path, series):
    note = tmp_path / "notes.txt"
    note.write_text("not an image")
    assert "1 of 9 files are not DICOM" in _refused([*series, note])


def test_nothing_given():
    assert "no files" in _refused([])


def test_colour_images(series):
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    for path in series:
        edit(path, SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0,
             BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0,
             PixelData=rgb.tobytes())
    assert "colour images are not supported" in _refused(series)


def test_several_2d_images_are_not_stacked(series):
    for path in series[:2]:
        edit(path, ImagePositionPatient=None, ImageOrientationPatient=None)
    assert "2 2D images without ImagePositionPatient" in _refused(series[:2])
    assert "have no ImagePositionPatient" in _refused(series[:3])


def _write_sr(path, like):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ComprehensiveSRStorage, ExplicitVRLittleEndian

    source = pydicom.dcmread(like, stop_before_pixels=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ComprehensiveSRStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = ComprehensiveSRStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    ds.StudyInstanceUID = source.StudyInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.save_as(path, enforce_file_format=True)
    return path
