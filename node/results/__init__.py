"""Result objects: a model's output as DICOM SEG and Comprehensive 3D SR (TID 1500).

Each output kind is a plug-in (node.results.kinds): a module registering a ResultWriter;
seg_writer and sr_writer register SEG and SR here, in that order (the SR reads the SEG).

    sources = read_sources(volume)                      # headers only, checked
    seg = build_segmentation(sources, output, ...)      # highdicom Segmentation
    sr = build_report(sources, volume, output, measurements, lesions, classes,
                      load_template(manifest.sr_template, "sr_templates"), seg, ...)
    write_dataset(seg, path); write_dataset(sr, path)   # atomic

Everything is deterministic: UIDs are parameters (``result_uids``), the only time written is
``content_datetime``. See docs in each module and sr_templates/README.md.
"""

from node.results import iod_cache, seg_writer, sr_writer
from node.results.equipment import model_device_uid
from node.results.errors import EmptyResultError, ResultsError, SourceError, TemplateError
from node.results.kinds import (
    DeviceIdentity,
    FinishedJob,
    ResultWriter,
    SharedHeader,
    register_writer,
    result_kinds,
    unregister_writer,
    writers,
)
from node.results.read import (
    MeasurementRecord,
    SegmentationRead,
    SegmentInfo,
    read_measurements,
    read_segmentation,
)
from node.results.seg import LABELMAP_SOP_CLASS, SEG_TYPES, build_segmentation
from node.results.segments import Segment, segment_plan
from node.results.sources import SourceImages, prepare_sources, read_sources
from node.results.sr import build_report
from node.results.templates import (
    BUILTIN_MEASUREMENTS,
    GroupSpec,
    LabelFinding,
    MeasurementCode,
    SRTemplate,
    TotalsSpec,
    load_template,
    parse_template,
)
from node.results.uids import KindUids, ResultUids, kind_uids, result_uids
from node.results.write import Written, write_dataset

iod_cache.install()

__all__ = [
    "BUILTIN_MEASUREMENTS",
    "LABELMAP_SOP_CLASS",
    "SEG_TYPES",
    "DeviceIdentity",
    "EmptyResultError",
    "FinishedJob",
    "GroupSpec",
    "KindUids",
    "LabelFinding",
    "MeasurementCode",
    "MeasurementRecord",
    "ResultUids",
    "ResultWriter",
    "ResultsError",
    "SRTemplate",
    "Segment",
    "SegmentInfo",
    "SegmentationRead",
    "SharedHeader",
    "SourceError",
    "SourceImages",
    "TemplateError",
    "TotalsSpec",
    "Written",
    "build_report",
    "build_segmentation",
    "kind_uids",
    "load_template",
    "model_device_uid",
    "parse_template",
    "prepare_sources",
    "read_measurements",
    "read_segmentation",
    "read_sources",
    "register_writer",
    "result_kinds",
    "result_uids",
    "seg_writer",
    "segment_plan",
    "sr_writer",
    "unregister_writer",
    "write_dataset",
    "writers",
]
