"""The readers on SEG and SR files written by other tools (dcmqi, highdicom, OHIF/dcmjs)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from node.imaging import SliceSource, load_series
from node.results import read_measurements, read_segmentation


@pytest.fixture(scope="module")
def dcmqi_ct(shared_data):
    case = shared_data / "ct_abdomen_dcmqi_3slice"
    return case, load_series(sorted((case / "dicom_ct").glob("*.dcm")))


def _nrrd(path) -> tuple[np.ndarray, tuple[float, ...]]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image.GetOrigin()


def test_dcmqi_liver_seg_matches_its_nrrd_voxel_for_voxel(dcmqi_ct):
    case, volume = dcmqi_ct
    back = read_segmentation(case / "dicom_seg" / "liver.dcm", volume.sources)
    expected, origin = _nrrd(case / "labelmaps_nrrd" / "liver_seg.nrrd")
    np.testing.assert_allclose(origin, volume.origin, atol=1e-3)  # same grid, same k order
    assert [(s.number, s.label, s.type.meaning, s.algorithm_type) for s in back.segments] == [
        (1, "Liver", "Liver", "SEMIAUTOMATIC")]
    assert back.masks.shape == (3, 512, 512, 1)
    np.testing.assert_array_equal(back.mask(1), expected == 1)
    assert int(back.mask(1).sum()) == 107098


def test_dcmqi_overlapping_segments_match_their_nrrds(dcmqi_ct):
    case, volume = dcmqi_ct
    back = read_segmentation(case / "dicom_seg" / "partial_overlaps.dcm", volume.sources)
    assert [s.label for s in back.segments] == ["GREEN", "ORANGE", "PURPLE", "LIGHT_BLUE",
                                                 "DARK_BLUE"]
    expected = np.zeros(back.masks.shape, dtype=bool)
    for n in (1, 2, 3):
        labels, _ = _nrrd(case / "labelmaps_nrrd" / f"partial_overlaps-{n}.nrrd")
        for value in np.unique(labels[labels > 0]):
            expected[..., int(value) - 1] |= labels == value
    np.testing.assert_array_equal(back.masks, expected)
    with pytest.raises(ValueError, match="overlap"):
        back.label_map()


def test_highdicom_segs_read_with_and_without_sources(shared_data):
    folder = shared_data / "seg_sr_highdicom"
    # The 4 referenced CT slices are not one regular volume (gaps): list them as sources.
    headers = [pydicom.dcmread(p, stop_before_pixels=True)
               for p in sorted((folder / "referenced_ct_pydicom_CT2").iterdir())]
    sources = [SliceSource("", str(h.SOPInstanceUID)) for h in
               sorted(headers, key=lambda h: float(h.ImagePositionPatient[2]))]
    binary = read_segmentation(folder / "seg_image_ct_binary.dcm")
    assert binary.segmentation_type == "BINARY"
    assert [s.label for s in binary.segments] == ["first segment"]
    assert binary.affine is not None and int(binary.masks.sum()) > 0
    fractional = read_segmentation(folder / "seg_image_ct_true_fractional.dcm")
    assert fractional.segmentation_type == "FRACTIONAL" and fractional.fractions is not None
    assert float(fractional.fractions.max()) <= 1.0
    on_ct = read_segmentation(folder / "seg_image_ct_binary.dcm", sources)
    assert on_ct.masks.shape[:3] == (4, 16, 16)
    assert int(on_ct.masks.sum()) == int(binary.masks.sum())


def test_qin_headneck_dcmqi_sr_measurements(shared_data):
    folder = shared_data / "seg_sr_qin_headneck_dcmqi"
    records = read_measurements(folder / "sr.dcm")
    # 24 NUM items: 22 measurements + the image library's rows/columns (not measurements).
    assert len(records) == 22
    assert {r.tracking_id for r in records} == {"primary tumor"}
    volume = [r for r in records if r.name == "Volume"]
    # SNOMED RT legacy code (2016): SRT G-D705, today SCT 118565006.
    assert [(r.value, r.unit, r.concept.value) for r in volume] == [(33.5824, "ml", "G-D705")]
    suv_mean = [r for r in records if r.name == "SUVbw" and r.derivation == "Mean"]
    assert [r.value for r in suv_mean] == [6.01529]
    seg = read_segmentation(folder / "seg.dcm")
    assert [s.label for s in seg.segments] == ["Neoplasm, Primary"]
    assert int(seg.masks.sum()) == 795


def test_ohif_dcmjs_enhanced_srs(shared_data):
    folder = shared_data / "seg_sr_dcmjs"
    records = read_measurements(folder / "sample-sr.dcm")
    axes = {r.name: r.value for r in records}
    assert axes == {"Long Axis": pytest.approx(64.45, abs=0.01),
                    "Short Axis": pytest.approx(42.97, abs=0.01)}
    # cornerstoneTools 4: NUM items without a value (highdicom refuses them) are skipped.
    older = read_measurements(folder / "structured_report.dcm")
    assert [round(r.value, 1) for r in older if r.name in ("Long Axis", "Short Axis")] == [
        93.9, 47.0]
    assert any(r.name == "AREA" and r.value == pytest.approx(4806.42, abs=0.01) for r in older)
    seg = read_segmentation(folder / "tumor_User1_Manual_Trial1.dcm")
    assert [s.label for s in seg.segments] == ["Neoplasm, Primary", "Neoplasm, Secondary"]


def test_highdicom_srs(shared_data):
    folder = shared_data / "seg_sr_highdicom"
    groups = read_measurements(folder / "sr_document_with_multiple_groups.dcm")
    assert [(r.tracking_id, r.name, r.value, r.unit) for r in groups] == [
        ("Image0001", "Intensity Histogram Mean", pytest.approx(-119.0739, abs=1e-3), "[hnsf'U]"),
        ("LungNodule0001", "Diameter", 10.0, "mm"),
        ("Aorta0001", "Diameter", 20.0, "mm"),
        ("Vertebra0001", "Volume", 200.0, "mm3"),
    ]
    single = read_measurements(folder / "sr_document.dcm")
    assert [(r.name, r.value, r.unit) for r in single] == [
        ("Area of defined region", 1.7, "cm2")]
