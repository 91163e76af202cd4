"""Output kind "sr": the TID 1500 Comprehensive 3D SR (node.results.sr); it reads the SEG."""

from __future__ import annotations

from collections.abc import Mapping

from pydicom.dataset import Dataset

from node.config import ResultsConfig
from node.results.kinds import FinishedJob, SharedHeader, register_writer
from node.results.sr import build_report
from node.results.templates import load_template
from node.results.uids import KindUids


class SrWriter:
    kind = "sr"
    sop_classes: Mapping[str, str] = {
        "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR Storage",
    }
    after: tuple[str, ...] = ("seg",)
    series_number = 9002

    def wants(self, job: FinishedJob, results: ResultsConfig) -> bool:
        return True

    def build(self, job: FinishedJob, header: SharedHeader, uids: KindUids,
              results: ResultsConfig) -> Dataset | None:
        template = load_template(job.manifest.sr_template, job.templates_dir)
        return build_report(
            header.sources, job.volume, job.output, job.regions, job.lesions, job.classes,
            template, job.built.get("seg"),
            sop_instance_uid=uids.instance, series_instance_uid=uids.series,
            series_number=header.series_number, series_description=header.series_description,
            manufacturer=header.manufacturer, content_datetime=header.content_datetime,
            institution_name=header.institution_name, uid_root=header.uid_root,
            segments=job.segments, totals=job.totals, total_specs=job.manifest.totals,
        )


register_writer(SrWriter())
