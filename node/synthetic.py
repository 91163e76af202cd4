"""Synthetic DICOM series with known geometry and known content.

Used by the tests, the benchmarks and ``radnode synth`` (to try a node without patient data).
The patient is always fictitious.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from node import __version__
from node.imaging.volume import Volume

# A field over patient coordinates: (x, y, z) arrays in LPS mm -> values (HU for CT).
Field = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SeriesGeometry:
    rows: int = 512
    columns: int = 512
    slices: int = 300
    pixel_spacing: tuple[float, float] = (0.8, 0.8)  # (row spacing, column spacing) as DICOM
    slice_spacing: float = 1.0
    origin: tuple[float, float, float] = (-204.8, -204.8, 0.0)
    # ImageOrientationPatient: row direction cosine, then column direction cosine.
    orientation: tuple[float, float, float, float, float, float] = (1, 0, 0, 0, 1, 0)

    @property
    def normal(self) -> np.ndarray:
        o = np.asarray(self.orientation, dtype=float)
        return np.cross(o[:3], o[3:])

    def position(self, k: int) -> np.ndarray:
        return np.asarray(self.origin, dtype=float) + k * self.slice_spacing * self.normal

    def slice_coordinates(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """LPS coordinates of every pixel centre of slice ``k``, each shaped (rows, columns)."""
        o = np.asarray(self.orientation, dtype=float)
        jj, ii = np.mgrid[0 : self.rows, 0 : self.columns].astype(float)
        p = self.position(k)
        dr, dc = self.pixel_spacing
        xyz = (
            p[:, None, None]
            + o[:3, None, None] * (ii * dc)[None]
            + o[3:, None, None] * (jj * dr)[None]
        )
        return xyz[0], xyz[1], xyz[2]


def ball(center: Sequence[float], radius: float, value: float, background: Field | float = -1000.0
         ) -> Field:
    """A sphere of ``value`` at ``center`` (LPS mm) over ``background``."""
    return ellipsoid(center, (radius, radius, radius), value, background)


def ellipsoid(center: Sequence[float], radii: Sequence[float], value: float,
              background: Field | float = -1000.0) -> Field:
    cx, cy, cz = center
    rx, ry, rz = radii

    def field(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        base = background(x, y, z) if callable(background) else np.full(x.shape, background)
        inside = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1.0
        return np.where(inside, value, base)

    return field


def chest_phantom(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Air, an elliptic body of soft tissue, two lungs with an emphysematous patch, a spine."""
    out = np.full(x.shape, -1000.0)
    body = (x / 160.0) ** 2 + (y / 110.0) ** 2 <= 1.0
    out[body] = 40.0
    for side in (-1, 1):
        lung = ((x - side * 75.0) / 55.0) ** 2 + ((y + 5.0) / 75.0) ** 2 <= 1.0
        out[lung] = -860.0
        patch = ((x - side * 80.0) / 20.0) ** 2 + ((y + 20.0) / 20.0) ** 2 <= 1.0
        out[lung & patch] = -975.0
    spine = (x / 18.0) ** 2 + ((y - 80.0) / 18.0) ** 2 <= 1.0
    out[spine] = 700.0
    return out


def chest_phantom_with_bowel_gas(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The chest phantom with a bubble of gas (-1000 HU) in the anterior body wall, between
    the lungs and touching neither: what a loop of bowel cut by the field of view looks like."""
    out = chest_phantom(x, y, z)
    out[(x / 15.0) ** 2 + ((y + 95.0) / 12.0) ** 2 <= 1.0] = -1000.0
    return out


def write_series(
    out_dir: str | Path,
    geometry: SeriesGeometry | None = None,
    content: Field | float = chest_phantom,
    *,
    modality: str = "CT",
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "Synthetic",
    patient_name: str = "Synthetic^Phantom",
    patient_id: str = "SYNTH0001",
    extra: dict[str, object] | None = None,
    rescale_intercept: float = -1024.0,
) -> list[Path]:
    """Write one single-frame series, one file per slice; returns the paths in slice order."""
    geometry = geometry or SeriesGeometry()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    paths = []
    for k in range(geometry.slices):
        if callable(content):
            values = content(*geometry.slice_coordinates(k))
        else:
            values = np.full((geometry.rows, geometry.columns), content, dtype=float)
        stored = np.clip(np.rint(values - rescale_intercept), -32768, 32767).astype(np.int16)
        ds = _slice_dataset(geometry, k, sop_class, modality)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = series_description
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.RescaleIntercept = rescale_intercept
        ds.RescaleSlope = 1
        ds.PixelData = stored.tobytes()
        for keyword, value in (extra or {}).items():
            setattr(ds, keyword, value)
        path = out / f"{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# A 3D T1-weighted gradient-echo acquisition (MPRAGE-like), as an MR scanner describes it.
T1_MPRAGE = {
    "MRAcquisitionType": "3D",
    "ScanningSequence": ["GR", "IR"],
    "SequenceVariant": ["SP", "MP"],
    "ScanOptions": "",
    "SequenceName": "*tfl3d1",
    "RepetitionTime": "2300",
    "EchoTime": "2.98",
    "InversionTime": "900",
    "FlipAngle": "9",
    "EchoTrainLength": 1,
    "MagneticFieldStrength": "3",
    "BodyPartExamined": "HEAD",
}


def write_volume_series(
    volume: Volume,
    out_dir: str | Path,
    *,
    series_description: str = "T1 MPRAGE sag",
    attributes: dict[str, object] | None = None,
    study_uid: str | None = None,
    patient_name: str = "Synthetic^Phantom",
    patient_id: str = "SYNTH0001",
) -> list[Path]:
    """Write a real volume (a NIfTI or MGZ from a public data set) as a single-frame MR series,
    one file per k-slice, keeping its geometry exactly; ``attributes`` default to a 3D T1
    (``T1_MPRAGE``). Intensities are stored as integers (rounded). The patient is fictitious."""
    d = np.asarray(volume.direction, dtype=float)
    array = volume.array
    origin = np.asarray(volume.origin, dtype=float)
    if np.dot(np.cross(d[:, 0], d[:, 1]), d[:, 2]) < 0:  # left-handed: write k the other way
        origin = volume.index_to_patient(np.array([0.0, 0.0, volume.shape_ijk[2] - 1]))
        array = array[::-1]
    i, j, k = volume.shape_ijk
    geometry = SeriesGeometry(
        rows=j, columns=i, slices=k, pixel_spacing=(volume.spacing[1], volume.spacing[0]),
        slice_spacing=volume.spacing[2], origin=(origin[0], origin[1], origin[2]),
        orientation=(*d[:, 0], *d[:, 1]),
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    stored_all = np.clip(np.rint(array), -32768, 32767).astype(np.int16)
    paths = []
    for index in range(k):
        ds = _slice_dataset(geometry, index, MRImageStorage, "MR")
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesNumber = 1
        ds.SeriesDescription = series_description
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.PatientPosition = "HFS"
        for keyword, value in {**T1_MPRAGE, **(attributes or {})}.items():
            setattr(ds, keyword, value)
        ds.PixelData = np.ascontiguousarray(stored_all[index]).tobytes()
        path = out / f"{index + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _slice_dataset(geometry: SeriesGeometry, k: int, sop_class: str, modality: str) -> FileDataset:
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)  # made in memory
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.Modality = modality
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = "SYNTH"
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "radnode synthetic"
    ds.SoftwareVersions = __version__
    ds.InstanceNumber = k + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [_ds(v) for v in geometry.position(k)]
    ds.ImageOrientationPatient = [_ds(v) for v in geometry.orientation]
    ds.PixelSpacing = [_ds(v) for v in geometry.pixel_spacing]
    ds.SliceThickness = _ds(geometry.slice_spacing)
    ds.SliceLocation = _ds(float(geometry.position(k) @ geometry.normal))
    ds.PositionReferenceIndicator = ""
    ds.Rows = geometry.rows
    ds.Columns = geometry.columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    if modality == "CT":
        ds.KVP = 120
        ds.BodyPartExamined = "CHEST"
        ds.RescaleType = "HU"
        ds.WindowCenter = 40
        ds.WindowWidth = 400
    return ds


def _ds(value: float) -> str:
    """A decimal string that fits DICOM's 16 characters."""
    text = f"{float(value):.6g}"
    return "0" if text == "-0" else text



def write_enhanced(
    out_path: str | Path,
    geometry: SeriesGeometry | None = None,
    content: Field | float = chest_phantom,
    *,
    modality: str = "CT",
    frame_order: Sequence[int] | None = None,
    slopes: Sequence[float] | None = None,
    rescale_intercept: float = -1024.0,
    per_frame_orientation: bool = False,
    with_transformation: bool = True,
) -> Path:
    """Write one enhanced multi-frame object (Enhanced CT or MR) with per-frame functional groups.

    ``frame_order[f]`` is the slice stored as frame ``f`` (default: slice order), so tests can
    store frames out of order. ``slopes[k]`` is slice k's RescaleSlope, written per frame in a
    PixelValueTransformationSequence (omitted with ``with_transformation=False``: identity).
    Pixel spacing (and, unless ``per_frame_orientation``, the orientation) is shared.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import EnhancedCTImageStorage, EnhancedMRImageStorage

    geometry = geometry or SeriesGeometry()
    order = list(frame_order) if frame_order is not None else list(range(geometry.slices))
    slopes = list(slopes) if slopes is not None else [1.0] * geometry.slices
    intercept = rescale_intercept if with_transformation else 0.0
    sop_class = EnhancedCTImageStorage if modality == "CT" else EnhancedMRImageStorage
    ds = _slice_dataset(geometry, 0, sop_class, modality)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                    "SliceThickness", "SliceLocation", "InstanceNumber", "WindowCenter",
                    "WindowWidth", "RescaleType"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.InstanceNumber = 1
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.PatientName = "Synthetic^Phantom"
    ds.PatientID = "SYNTH0001"
    ds.NumberOfFrames = len(order)

    def item(**attributes: object) -> Dataset:
        out = Dataset()
        for keyword, value in attributes.items():
            setattr(out, keyword, value)
        return out

    orientation = [_ds(v) for v in geometry.orientation]
    shared = item(
        PixelMeasuresSequence=DicomSequence([item(
            PixelSpacing=[_ds(v) for v in geometry.pixel_spacing],
            SliceThickness=_ds(abs(geometry.slice_spacing)),
        )]),
    )
    if not per_frame_orientation:
        shared.PlaneOrientationSequence = DicomSequence([item(ImageOrientationPatient=orientation)])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame, stored_frames = [], []
    for k in order:
        if callable(content):
            values = content(*geometry.slice_coordinates(k))
        else:
            values = np.full((geometry.rows, geometry.columns), content, dtype=float)
        stored = np.rint((values - intercept) / slopes[k])
        stored_frames.append(np.clip(stored, -32768, 32767).astype(np.int16))
        group = item(
            PlanePositionSequence=DicomSequence([item(
                ImagePositionPatient=[_ds(v) for v in geometry.position(k)]
            )]),
            FrameContentSequence=DicomSequence([item(InStackPositionNumber=k + 1)]),
        )
        if with_transformation:
            group.PixelValueTransformationSequence = DicomSequence([item(
                RescaleIntercept=_ds(intercept), RescaleSlope=_ds(slopes[k]),
                RescaleType="HU" if modality == "CT" else "US",
            )])
        if per_frame_orientation:
            group.PlaneOrientationSequence = DicomSequence(
                [item(ImageOrientationPatient=orientation)]
            )
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.PixelData = np.stack(stored_frames).tobytes()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out


def write_projection(
    out_path: str | Path,
    image: np.ndarray,
    *,
    modality: str = "CR",
    photometric: str = "MONOCHROME1",
    bits_stored: int = 12,
    imager_pixel_spacing: tuple[float, float] = (0.15, 0.1),
) -> Path:
    """Write one 2D projection image (CR, DX, MG) without patient position.

    ``image`` holds display values (higher = brighter, within 0..2**bits_stored-1); with
    MONOCHROME1 the stored values are inverted (``max - image``), as a CR plate would store them.
    """
    from pydicom.uid import (
        ComputedRadiographyImageStorage,
        DigitalMammographyXRayImageStorageForPresentation,
        DigitalXRayImageStorageForPresentation,
    )

    sop_class = {
        "CR": ComputedRadiographyImageStorage,
        "DX": DigitalXRayImageStorageForPresentation,
        "MG": DigitalMammographyXRayImageStorageForPresentation,
    }[modality]
    rows, columns = image.shape
    ds = _slice_dataset(SeriesGeometry(rows=rows, columns=columns, slices=1), 0, sop_class,
                        modality)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                    "SliceThickness", "SliceLocation"):
        delattr(ds, keyword)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.PatientName = "Synthetic^Phantom"
    ds.PatientID = "SYNTH0001"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = [_ds(v) for v in imager_pixel_spacing]
    ds.PhotometricInterpretation = photometric
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    top = (1 << bits_stored) - 1
    values = np.clip(np.rint(image), 0, top).astype(np.uint16)
    stored = top - values if photometric == "MONOCHROME1" else values
    ds.PixelData = stored.astype(np.uint16).tobytes()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out
