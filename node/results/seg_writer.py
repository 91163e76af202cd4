"""Output kind "seg": the model's label map as a DICOM Segmentation (node.results.seg)."""

from __future__ import annotations

from collections.abc import Mapping

from pydicom.dataset import Dataset

from node.config import ResultsConfig
from node.results.errors import EmptyResultError
from node.results.kinds import FinishedJob, SharedHeader, register_writer
from node.results.seg import LABELMAP_SOP_CLASS, build_segmentation
from node.results.uids import KindUids


class SegWriter:
    kind = "seg"
    sop_classes: Mapping[str, str] = {
        "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
        LABELMAP_SOP_CLASS: "Label Map Segmentation Storage",
    }
    after: tuple[str, ...] = ()
    series_number = 9001

    def wants(self, job: FinishedJob, results: ResultsConfig) -> bool:
        return job.output.kind != "classification"

    def build(self, job: FinishedJob, header: SharedHeader, uids: KindUids,
              results: ResultsConfig) -> Dataset | None:
        try:
            return build_segmentation(
                header.sources, job.output,
                sop_instance_uid=uids.instance, series_instance_uid=uids.series,
                series_number=header.series_number,
                series_description=header.series_description,
                manufacturer=header.manufacturer, content_datetime=header.content_datetime,
                model_description=header.device.description, seg_type=results.seg.type,
                institution_name=header.institution_name, uid_root=header.uid_root,
                segments=job.segments,
            )
        except EmptyResultError:
            return None  # nothing found: the SR says so, and there is no SEG to show


register_writer(SegWriter())
