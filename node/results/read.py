"""Read SEG and TID 1500 SR files back: what the node checks after writing and what tests use.

``read_segmentation`` gives per-segment masks on the source grid (the volume's slice order when
the volume's sources are passed) with each segment's metadata. ``read_measurements`` walks any
TID 1500 tree (ours, dcmqi's, OHIF/dcmjs's) and lists every numeric measurement with the
tracking identifier of its group.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

from node.imaging.volume import SliceSource, Volume
from node.inference.manifest import Code
from node.results.errors import ResultsError

_MEASUREMENT_GROUP = ("125007", "DCM")
_IMAGE_LIBRARY = ("111028", "DCM")
_TRACKING_ID = ("112039", "DCM")
_TRACKING_UID = ("112040", "DCM")
_DERIVATION = ("121401", "DCM")


@dataclass(frozen=True)
class SegmentInfo:
    number: int
    label: str
    category: Code
    type: Code
    algorithm_type: str
    algorithm_name: str | None
    algorithm_version: str | None
    tracking_id: str | None
    tracking_uid: str | None


@dataclass(frozen=True)
class SegmentationRead:
    """A SEG read back. ``masks[k, j, i, s]`` is segment ``segments[s]``; ``k`` follows the
    ``sources`` given to read_segmentation, or the SEG's own volume geometry (``affine``, which
    covers only the slices the SEG has frames for)."""

    sop_instance_uid: str
    sop_class_uid: str
    segmentation_type: str
    segments: tuple[SegmentInfo, ...]
    masks: np.ndarray
    affine: np.ndarray | None = None  # 4x4 (k, j, i) -> LPS (highdicom's), read without sources
    fractions: np.ndarray | None = None  # float32 0..1, FRACTIONAL SEGs only

    def mask(self, number: int) -> np.ndarray:
        for s, info in enumerate(self.segments):
            if info.number == number:
                return self.masks[..., s]
        raise KeyError(f"no segment {number}")

    def label_map(self) -> np.ndarray:
        """Segment numbers per voxel (0: none); raises where segments overlap."""
        if self.masks.shape[-1] and int(self.masks.sum(axis=-1).max()) > 1:
            raise ResultsError("segments overlap: no single label map; use masks")
        dtype = np.uint16 if len(self.segments) > 255 else np.uint8
        out = np.zeros(self.masks.shape[:-1], dtype=dtype)
        for s, info in enumerate(self.segments):
            out[self.masks[..., s]] = info.number
        return out

    def label_volume(self) -> Volume:
        """The label map (segment numbers) as a Volume on the SEG's own grid; only for a SEG
        read without sources (with sources, the grid is that volume's)."""
        if self.affine is None:
            raise ResultsError("the SEG was read on a source volume's slices: use its grid")
        columns = np.asarray(self.affine, dtype=np.float64)[:3, 2::-1]  # (k, j, i) -> (i, j, k)
        spacing = np.linalg.norm(columns, axis=0)
        return Volume(array=self.label_map(), spacing=tuple(spacing),
                      origin=tuple(self.affine[:3, 3]), direction=columns / spacing[None, :])


def read_segmentation(path: str | Path, sources: Sequence[SliceSource] | None = None
                      ) -> SegmentationRead:
    """The SEG at ``path`` as masks; with ``sources`` (a Volume's) on that volume's slices."""
    seg = hd.seg.segread(path)
    numbers = list(seg.segment_numbers)
    affine = None
    fractional = seg.SegmentationType == "FRACTIONAL"
    dtype = np.float32 if fractional else np.uint8
    if sources:
        uids = {s.sop_instance_uid for s in sources}
        if len(uids) == 1 and all(s.frame_number for s in sources):
            pixels = seg.get_pixels_by_source_frame(
                sources[0].sop_instance_uid,
                source_frame_numbers=[int(s.frame_number or 0) for s in sources],
                assert_missing_frames_are_empty=True, ignore_spatial_locations=True,
                segment_numbers=numbers, combine_segments=False, dtype=dtype,
            )
        else:
            pixels = seg.get_pixels_by_source_instance(
                [s.sop_instance_uid for s in sources],
                assert_missing_frames_are_empty=True, ignore_spatial_locations=True,
                segment_numbers=numbers, combine_segments=False, dtype=dtype,
            )
    else:
        volume = seg.get_volume(segment_numbers=numbers, combine_segments=False, dtype=dtype)
        pixels, affine = volume.array, volume.affine
    if pixels.ndim == 3:  # one segment
        pixels = pixels[..., None]
    return SegmentationRead(
        sop_instance_uid=str(seg.SOPInstanceUID),
        sop_class_uid=str(seg.SOPClassUID),
        segmentation_type=str(seg.SegmentationType),
        segments=tuple(_segment_info(seg.get_segment_description(n)) for n in numbers),
        masks=pixels >= 0.5 if fractional else pixels.astype(bool, copy=False),
        affine=affine,
        fractions=pixels if fractional else None,
    )


def _segment_info(desc: hd.seg.SegmentDescription) -> SegmentInfo:
    algorithm = desc.get("SegmentationAlgorithmIdentificationSequence")
    return SegmentInfo(
        number=int(desc.SegmentNumber),
        label=str(desc.SegmentLabel),
        category=_code(desc.SegmentedPropertyCategoryCodeSequence[0]),
        type=_code(desc.SegmentedPropertyTypeCodeSequence[0]),
        algorithm_type=str(desc.SegmentAlgorithmType),
        algorithm_name=str(algorithm[0].AlgorithmName) if algorithm else None,
        algorithm_version=str(algorithm[0].AlgorithmVersion) if algorithm else None,
        tracking_id=str(desc.TrackingID) if "TrackingID" in desc else None,
        tracking_uid=str(desc.TrackingUID) if "TrackingUID" in desc else None,
    )


@dataclass(frozen=True)
class MeasurementRecord:
    """One NUM item of an SR: its group's tracking identifier, concept, value and unit."""

    tracking_id: str | None
    name: str  # concept meaning, e.g. "Volume"
    value: float
    unit: str  # UCUM code value, e.g. "ml"
    concept: Code
    derivation: str | None = None  # e.g. "Mean"
    tracking_uid: str | None = None


def read_measurements(path: str | Path) -> list[MeasurementRecord]:
    """Every numeric measurement of the SR at ``path``, in document order.

    Image Library descriptors (rows, pixel spacing, ...) are not measurements and are skipped;
    NUM items outside a Measurement Group have ``tracking_id`` None. Documents that highdicom
    refuses to parse (e.g. OHIF's NUM items without a value) are walked as plain datasets.
    """
    try:
        sr: Dataset = hd.sr.srread(path)
    except (AttributeError, ValueError, TypeError):
        sr = dcmread(path)
        if sr.get("Modality") != "SR":
            raise ResultsError(f"{path} is not an SR document") from None
    return list(_walk(sr.get("ContentSequence", []), None, None))


def _walk(items: Sequence[Dataset], tracking_id: str | None, tracking_uid: str | None
          ) -> Iterator[MeasurementRecord]:
    for item in items:
        concept = _concept(item)
        children = item.get("ContentSequence", [])
        if item.ValueType == "CONTAINER":
            if concept == _IMAGE_LIBRARY:
                continue
            if concept == _MEASUREMENT_GROUP:
                tid, tuid = _tracking(children)
                yield from _walk(children, tid, tuid)
            else:
                yield from _walk(children, tracking_id, tracking_uid)
        elif item.ValueType == "NUM" and item.get("RelationshipType") != "HAS ACQ CONTEXT":
            measured = item.get("MeasuredValueSequence")
            if not measured:  # a NUM with no value (allowed with a Numeric Value Qualifier)
                continue
            name = item.ConceptNameCodeSequence[0]
            derivation = next((_code(c.ConceptCodeSequence[0]).meaning for c in children
                               if c.ValueType == "CODE" and _concept(c) == _DERIVATION), None)
            yield MeasurementRecord(
                tracking_id=tracking_id,
                name=str(name.CodeMeaning),
                value=float(measured[0].NumericValue),
                unit=str(measured[0].MeasurementUnitsCodeSequence[0].CodeValue),
                concept=_code(name),
                derivation=derivation,
                tracking_uid=tracking_uid,
            )
            yield from _walk(children, tracking_id, tracking_uid)
        else:
            yield from _walk(children, tracking_id, tracking_uid)


def _tracking(children: Sequence[Dataset]) -> tuple[str | None, str | None]:
    tid = tuid = None
    for c in children:
        if c.ValueType == "TEXT" and _concept(c) == _TRACKING_ID:
            tid = str(c.TextValue)
        elif c.ValueType == "UIDREF" and _concept(c) == _TRACKING_UID:
            tuid = str(c.UID)
    return tid, tuid


def _concept(item: Dataset) -> tuple[str, str] | None:
    seq = item.get("ConceptNameCodeSequence")
    if not seq:
        return None
    return str(seq[0].CodeValue), str(seq[0].CodingSchemeDesignator)


def _code(item: Dataset) -> Code:
    value = item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue")
    return Code(str(value), str(item.CodingSchemeDesignator), str(item.CodeMeaning))
