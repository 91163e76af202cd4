"""DICOM headers to per-frame records: what the stacker and the pixel reader need, read once.

Headers are read with pixel data (and other large values) deferred, so the first pass costs
only the header parse; pixels are read later straight into their final slot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from node.imaging.errors import VolumeError

PIXEL_DATA = 0x7FE00010
_DEFER_BYTES = 1024  # values above this (pixel data, vendor blobs) are read only if asked for

# Objects that carry no image of the patient to stack (they may sit in the same folder).
_NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.66",  # SEG, raw data, registrations, fiducials, surfaces
    "1.2.840.10008.5.1.4.1.1.67",  # real world value mapping
    "1.2.840.10008.5.1.4.1.1.88.",  # SR, key object selection
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF, CDA, STL
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms
    "1.2.840.10008.5.1.4.1.1.30",  # parametric maps (derived, float pixels)
    "1.2.840.10008.5.1.4.1.1.481.",  # RT objects (RT Image is .1: allowed below)
    "1.2.840.10008.1.3.10",  # DICOMDIR
)
_IMAGE_EXCEPTIONS = ("1.2.840.10008.5.1.4.1.1.481.1",)
# Images smaller than this on a side hold no anatomy a model could read (a 1 x 1 "image" made
# jobs finish "done" with nothing in them).
MIN_IMAGE_SIDE = 4
# No modality's quantity reaches this (PET activity is below 1e9 Bq/ml, CT within +/-32768 HU).
MAX_RESCALED_VALUE = 1e12  # RT Image Storage
_NON_IMAGE_MODALITIES = frozenset(
    {"SEG", "SR", "KO", "PR", "REG", "RWV", "DOC", "FID", "PLAN", "RTSTRUCT", "RTPLAN",
     "RTRECORD", "RTDOSE", "ECG", "HD", "AU"}
)


@dataclass
class DicomObject:
    """One file: its header (pixels deferred) and the identity attributes, with fallbacks."""

    path: str
    ds: Dataset
    sop_class_uid: str
    sop_instance_uid: str
    series_uid: str
    modality: str
    frame_of_reference_uid: str
    transfer_syntax: str

    @property
    def is_image(self) -> bool:
        uid = self.sop_class_uid
        if uid in _IMAGE_EXCEPTIONS:
            return True
        return not (
            uid.startswith(_NON_IMAGE_SOP_PREFIXES) or self.modality in _NON_IMAGE_MODALITIES
        )

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in [v.upper() for v in values(self.ds, "ImageType") or []]


@dataclass
class Frame:
    """One 2D frame: a slice file, or one frame of an enhanced multi-frame object."""

    obj: DicomObject
    frame_index: int  # 0-based position in the object's pixel data
    frame_number: int | None  # 1-based, only for multi-frame objects
    rows: int
    columns: int
    position: np.ndarray | None  # ImagePositionPatient, LPS mm
    orientation: np.ndarray | None  # ImageOrientationPatient (row cosine, column cosine)
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing) as DICOM
    slice_step: float | None  # SpacingBetweenSlices or SliceThickness: only for one slice
    slope: float
    intercept: float


def read_object(path: str | Path) -> DicomObject:
    """Parse one file's header; raises InvalidDicomError for non-DICOM files."""
    ds = dcmread(path, defer_size=_DEFER_BYTES)
    meta = getattr(ds, "file_meta", None) or Dataset()
    # Some exports blank the dataset-level UIDs (the file meta keeps them): fall back to those.
    sop_class = _text(ds, "SOPClassUID") or _text(meta, "MediaStorageSOPClassUID")
    sop_instance = _text(ds, "SOPInstanceUID") or _text(meta, "MediaStorageSOPInstanceUID")
    syntax = _text(meta, "TransferSyntaxUID") or "1.2.840.10008.1.2"
    return DicomObject(
        path=str(path),
        ds=ds,
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        series_uid=_text(ds, "SeriesInstanceUID"),
        modality=_text(ds, "Modality").upper(),
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID"),
        transfer_syntax=syntax,
    )


def read_objects(paths: list[str | Path]) -> list[DicomObject]:
    """Headers of every file, or one VolumeError counting the files that are not DICOM."""
    objects, not_dicom, unreadable = [], 0, 0
    for path in paths:
        try:
            objects.append(read_object(path))
        except InvalidDicomError:
            not_dicom += 1
        except Exception:  # truncated or malformed: pydicom raises many types
            unreadable += 1
    if not_dicom or unreadable:
        parts = []
        if not_dicom:
            parts.append(f"{not_dicom} of {len(paths)} files are not DICOM")
        if unreadable:
            parts.append(f"{unreadable} of {len(paths)} files are unreadable or truncated")
        raise VolumeError("; ".join(parts))
    return objects


def frames_of(obj: DicomObject) -> list[Frame]:
    """The frames of one image object with their geometry and rescale, per frame."""
    ds = obj.ds
    if PIXEL_DATA not in ds:
        raise VolumeError(f"a {obj.modality or 'DICOM'} image object has no pixel data")
    if "Rows" not in ds or "Columns" not in ds:
        raise VolumeError("an image object lacks Rows/Columns")
    declared_samples = integer(ds, "SamplesPerPixel")
    samples = 1 if declared_samples is None else declared_samples
    if samples < 1:
        raise VolumeError(f"SamplesPerPixel is {samples}: an image has at least one sample")
    photometric = _text(ds, "PhotometricInterpretation").upper()
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2", ""):
        raise VolumeError(
            f"colour images are not supported (PhotometricInterpretation {photometric or '?'}, "
            f"{samples} samples per pixel)"
        )
    n = integer(ds, "NumberOfFrames") or 1
    rows, columns = integer(ds, "Rows") or 0, integer(ds, "Columns") or 0
    if rows < 1 or columns < 1:
        raise VolumeError("an image object has no valid Rows/Columns")
    if rows < MIN_IMAGE_SIDE or columns < MIN_IMAGE_SIDE:
        raise VolumeError(f"images of {rows} x {columns} pixels are too small to hold anatomy "
                          f"(at least {MIN_IMAGE_SIDE} x {MIN_IMAGE_SIDE})")
    _check_pixel_format(ds)
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        return _checked_rescale(_enhanced_frames(obj, n, rows, columns), ds)
    if n > 1:
        raise VolumeError(
            f"a multi-frame object ({n} frames) has no per-frame plane positions "
            "(cine or projection frames do not form a volume)"
        )
    slope, intercept = _rescale(ds, ds)
    return _checked_rescale([
        Frame(
            obj=obj,
            frame_index=0,
            frame_number=None,
            rows=rows,
            columns=columns,
            position=_vector(ds, "ImagePositionPatient", 3),
            orientation=_vector(ds, "ImageOrientationPatient", 6),
            pixel_spacing=_pixel_spacing(ds, ds),
            slice_step=_slice_step(ds),
            slope=slope,
            intercept=intercept,
        )
    ], ds)


def _check_pixel_format(ds: Dataset) -> None:
    """Refuse pixel descriptions that no decoder can honour (they decoded as garbage or as
    nothing, and the job finished "done" with empty results)."""
    allocated = integer(ds, "BitsAllocated")
    if allocated not in (1, 8, 16, 32, 64):
        raise VolumeError(f"BitsAllocated is {allocated}: must be 1, 8, 16, 32 or 64")
    stored = integer(ds, "BitsStored")
    if stored is not None and not 1 <= stored <= allocated:
        raise VolumeError(f"BitsStored is {stored}: must be 1 to BitsAllocated ({allocated})")
    representation = integer(ds, "PixelRepresentation")
    if representation not in (None, 0, 1):
        raise VolumeError(f"PixelRepresentation is {representation}: must be 0 (unsigned) or 1 "
                          "(two's complement)")


def _checked_rescale(frames: list[Frame], ds: Dataset) -> list[Frame]:
    """Refuse a rescale that takes the stored values beyond any real quantity (a slope of
    1e308 makes every voxel infinite)."""
    allocated = integer(ds, "BitsAllocated") or 16
    bits = integer(ds, "BitsStored") or allocated
    signed = integer(ds, "PixelRepresentation") == 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    for frame in frames:
        ends = (frame.slope * low + frame.intercept, frame.slope * high + frame.intercept)
        if not all(math.isfinite(v) and abs(v) <= MAX_RESCALED_VALUE for v in ends):
            raise VolumeError(
                f"RescaleSlope {frame.slope:.4g} and RescaleIntercept {frame.intercept:.4g} take "
                f"the stored values beyond +/-{MAX_RESCALED_VALUE:.0e}")
    return frames


def _enhanced_frames(obj: DicomObject, n: int, rows: int, columns: int) -> list[Frame]:
    """Per-frame functional groups, each macro taken per-frame first, then shared."""
    ds = obj.ds
    shared_seq = ds.get("SharedFunctionalGroupsSequence") or []
    shared = shared_seq[0] if len(shared_seq) else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) and len(per_frame) != n:
        raise VolumeError(
            f"per-frame functional groups ({len(per_frame)}) do not match NumberOfFrames ({n})"
        )

    def macro(f: int, keyword: str) -> Dataset | None:
        for group in (per_frame[f] if len(per_frame) else None, shared):
            if group is not None and keyword in group and len(group[keyword].value):
                return group[keyword].value[0]
        return None

    frames = []
    for f in range(n):
        plane_pos = macro(f, "PlanePositionSequence")
        plane_ori = macro(f, "PlaneOrientationSequence")
        measures = macro(f, "PixelMeasuresSequence")
        transform = macro(f, "PixelValueTransformationSequence")
        position = _vector(plane_pos, "ImagePositionPatient", 3) if plane_pos else None
        if position is None and n > 1:
            raise VolumeError(
                f"a multi-frame object ({n} frames) has no per-frame plane positions "
                "(cine or projection frames do not form a volume)"
            )
        orientation = _vector(plane_ori, "ImageOrientationPatient", 6) if plane_ori else None
        slope, intercept = _rescale(transform, ds)
        frames.append(
            Frame(
                obj=obj,
                frame_index=f,
                frame_number=f + 1,
                rows=rows,
                columns=columns,
                position=position,
                orientation=orientation,
                pixel_spacing=_pixel_spacing(measures, ds),
                slice_step=_slice_step(measures) if measures is not None else _slice_step(ds),
                slope=slope,
                intercept=intercept,
            )
        )
    return frames


# Header values are read from the raw bytes where possible: pydicom's conversion machinery costs
# more than the file parse for the few attributes needed per slice.
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "SH", "TM", "UI"})


@cache
def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return tag


def values(ds: Dataset | None, keyword: str) -> list[str] | None:
    """A text attribute's values as strings (None when absent, [] when empty)."""
    found = _element(ds, keyword)
    if ds is None or found is None:
        return None
    tag, elem, raw_vr = found
    if raw_vr in _TEXT_VRS:
        text = elem.value.decode("latin-1").strip(" \x00")
        return [v.strip(" \x00") for v in text.split("\\")] if text else []
    value = _converted(ds, tag, keyword)
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes | int | float):
        return [str(value)]
    return [str(v) for v in value]


def integer(ds: Dataset | None, keyword: str) -> int | None:
    """An integer attribute (US or IS), None when absent or not a number."""
    element = _element(ds, keyword)
    if ds is None or element is None:
        return None
    tag, elem, raw_vr = element
    if raw_vr == "US" and len(elem.value) == 2:
        return int.from_bytes(elem.value, "little" if elem.is_little_endian else "big")
    found = values(ds, keyword) if (elem.VR or dictionary_VR(tag)) in _TEXT_VRS else None
    value = found[0] if found else _converted(ds, tag, keyword)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _element(ds: Dataset | None, keyword: str) -> tuple[int, Any, str | None] | None:
    """(tag, element, raw VR), the value left unconverted; None when absent. The raw VR is set
    only while the value is still the file's bytes (from the dictionary for implicit VR)."""
    if ds is None:
        return None
    tag = _tag(keyword)
    elem = ds.get_item(tag, keep_deferred=True)
    if elem is None:
        return None
    if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes):
        return tag, elem, elem.VR or dictionary_VR(tag)
    return tag, elem, None


def _converted(ds: Dataset, tag: int, keyword: str) -> Any:
    """An element's value; a value that does not fit its VR is refused by name (pydicom's
    message would quote the raw bytes, which may be patient data)."""
    try:
        return ds[tag].value
    except Exception as exc:
        vr = getattr(ds.get_item(tag, keep_deferred=True), "VR", None) or "?"
        raise VolumeError(f"{keyword} cannot be read: its value does not fit its VR {vr}") from exc


def _text(ds: Dataset, keyword: str) -> str:
    found = values(ds, keyword)
    return "\\".join(found) if found else ""


def _floats(ds: Dataset | None, keyword: str) -> list[float] | None:
    found = values(ds, keyword)
    if not found:
        return None
    try:
        return [float(v) for v in found]
    except ValueError as exc:
        raise VolumeError(f"{keyword} is not numeric") from exc


def _vector(ds: Dataset | None, keyword: str, length: int) -> np.ndarray | None:
    found = _floats(ds, keyword)
    if found is None:
        return None
    vector = np.array(found, dtype=np.float64)
    if vector.shape != (length,) or not np.all(np.isfinite(vector)):
        raise VolumeError(f"{keyword} must hold {length} finite numbers")
    return vector


def _pixel_spacing(measures: Dataset | None, top: Dataset) -> tuple[float, float] | None:
    for source in (measures, top):
        spacing = _vector(source, "PixelSpacing", 2)
        if spacing is not None:
            if np.any(spacing <= 0):
                raise VolumeError("PixelSpacing must be positive")
            return (float(spacing[0]), float(spacing[1]))
    return None


def _slice_step(ds: Dataset | None) -> float | None:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            found = _floats(ds, keyword)
        except VolumeError:
            found = None
        if found and abs(found[0]) > 0:
            return abs(found[0])
    return None


def _rescale(transform: Dataset | None, top: Dataset) -> tuple[float, float]:
    """(slope, intercept): per-frame transformation first, then the top level, then identity."""
    for source in (transform, top):
        slope, intercept = _floats(source, "RescaleSlope"), _floats(source, "RescaleIntercept")
        if slope and intercept:
            if slope[0] == 0 or not np.isfinite(slope[0]) or not np.isfinite(intercept[0]):
                raise VolumeError("RescaleSlope/RescaleIntercept are invalid")
            return slope[0], intercept[0]
    return 1.0, 0.0
