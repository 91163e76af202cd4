"""A model's label map as a DICOM Segmentation (highdicom), every attribute from our inputs.

BINARY with empty frames omitted and no compression is the default: every reader tested takes
it (STANDARDS.md). LABELMAP (Label Map Segmentation Storage, DICOM 2024c) with RLE Lossless is
the opt-in for many labels: one frame per slice instead of one per slice and segment.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from node import __version__
from node.config import SegType
from node.inference.manifest import Code
from node.inference.output import ModelOutput
from node.results.equipment import (
    algorithm_identification,
    model_device_uid,
    model_equipment,
    pin_generated_values,
)
from node.results.errors import EmptyResultError, ResultsError
from node.results.segments import (
    Segment,
    segment_plan,
    segment_tracking_uid,
    to_segment_numbers,
    tracking_id,
)
from node.results.sources import SourceImages, prepare_sources

SEG_TYPES = tuple(t.value for t in SegType)
LABELMAP_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.7"
_FALLBACK_CATEGORY = Code("91723000", "SCT", "Anatomical Structure")


def build_segmentation(
    sources: SourceImages | Sequence[Dataset],
    output: ModelOutput,
    *,
    sop_instance_uid: str,
    series_instance_uid: str,
    series_number: int,
    series_description: str,
    manufacturer: str,
    content_datetime: dt.datetime,
    model_description: str = "",
    seg_type: str = "binary",
    institution_name: str = "",
    device_serial_number: str = "0",
    uid_root: str = "2.25.",
    transfer_syntax_uid: str | None = None,
    workers: int = 0,
    segments: tuple[Segment, ...] | None = None,
) -> hd.seg.Segmentation:
    """The SEG of ``output.label_map`` (a [k, j, i] label array on the sources' grid).

    One segment per label present (see ``segments.segment_plan``). ``content_datetime`` is
    written as content, series, instance-creation and contribution date/time, so the same
    inputs give the same bytes. The transfer syntax defaults to Explicit VR Little Endian for
    BINARY and RLE Lossless for LABELMAP. Raises EmptyResultError when no label is present.
    """
    if seg_type not in SEG_TYPES:
        raise ResultsError(f"seg_type must be one of {SEG_TYPES}; got {seg_type!r}")
    if output.label_map is None:
        raise ResultsError(f"model {output.model} ({output.kind}) gave no label map to encode")
    src = sources if isinstance(sources, SourceImages) else prepare_sources(list(sources))
    plan = segment_plan(output) if segments is None else segments
    if not plan:
        raise EmptyResultError(f"model {output.model} found nothing: no SEG is written")
    _check_grid(src, output)
    labelmap = seg_type == "labelmap"
    pixels = src.in_frame_order(to_segment_numbers(output.label_map, plan))
    device_uid = model_device_uid(output.model, output.version, uid_root)
    seg = hd.seg.Segmentation(
        source_images=list(src.datasets),
        pixel_array=pixels,
        segmentation_type=(hd.seg.SegmentationTypeValues.LABELMAP if labelmap
                           else hd.seg.SegmentationTypeValues.BINARY),
        segment_descriptions=[
            _description(s, output, sop_instance_uid, uid_root) for s in plan
        ],
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=manufacturer,
        manufacturer_model_name="radnode",
        software_versions=__version__,
        device_serial_number=device_serial_number,
        transfer_syntax_uid=transfer_syntax_uid or (RLELossless if labelmap
                                                    else ExplicitVRLittleEndian),
        omit_empty_frames=True,
        content_description=(model_description or f"{output.model} {output.version}")[:64],
        series_description=series_description[:64],
        institution_name=institution_name or None,
        content_date=content_datetime.date(),
        content_time=content_datetime.time(),
        series_date=content_datetime.date(),
        series_time=content_datetime.time(),
        contributing_equipment=[
            model_equipment(manufacturer, output.model, output.version, device_uid,
                            content_datetime)
        ],
        workers=workers,
    )
    pin_generated_values(seg, content_datetime, uid_root)
    return seg


def _check_grid(src: SourceImages, output: ModelOutput) -> None:
    assert output.label_map is not None
    shape = output.label_map.shape
    ds = src.datasets[0]
    n_slices = len(src.frame_order) if src.frame_order is not None else len(src.datasets)
    if shape != (n_slices, int(ds.Rows), int(ds.Columns)):
        raise ResultsError(f"label map shape {shape} does not match the {n_slices} source "
                           f"slices of {ds.Rows}x{ds.Columns} pixels")


def _description(
    segment: Segment, output: ModelOutput, seg_uid: str, uid_root: str
) -> hd.seg.SegmentDescription:
    label = segment.label
    category = label.category or _FALLBACK_CATEGORY
    if label.type is None:
        raise ResultsError(f"label {label.value} ({label.name}) of model {output.model} has no "
                           "type code: a SEG segment needs a segmented property type")
    description = hd.seg.SegmentDescription(
        segment_number=segment.number,
        segment_label=label.name[:64],
        segmented_property_category=coded(category),
        segmented_property_type=coded(label.type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm_identification(output.model, output.version),
        tracking_uid=segment_tracking_uid(seg_uid, label.value, uid_root),
        tracking_id=tracking_id(label),
        display_color=hd.color.CIELabColor.from_rgb(*label.colour),
    )
    if label.laterality is not None:
        add_type_modifier(description, label.laterality)
    return description


def add_type_modifier(description: hd.seg.SegmentDescription, modifier: Code) -> None:
    """Refine the segmented property type with ``modifier`` (a laterality: SCT Left/Right).

    The Segment Description Macro (PS3.3 C.8.20.2) nests Segmented Property Type Modifier
    Code Sequence (0062,0011, type 3) in the Segmented Property Type Code Sequence item (the
    path highdicom's own attribute table gives it); SCT 7771000 "Left" and 24028007 "Right"
    are CID 244 Laterality codes. highdicom 0.28's SegmentDescription has no argument for it,
    so it is added to the built item, which the Segmentation keeps as it is; dciodvfy accepts
    it there (tests/results/test_brain_results.py).
    """
    item = description.SegmentedPropertyTypeCodeSequence[0]
    item.SegmentedPropertyTypeModifierCodeSequence = [coded(modifier)]


def coded(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)
