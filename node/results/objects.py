"""One run's DICOM results: the SEG (when something was segmented) and the TID 1500 SR.

The pipeline calls :func:`write_result_objects` after measuring. UIDs come from the source
series, the model, its version and the job's generation, and the only time written is
``content_datetime`` (the job's creation time in the service), so a re-run writes the same
objects and a re-send never duplicates them in the PACS.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from node.config import OutputConfig, ResultsConfig
from node.imaging.volume import Volume
from node.inference.manifest import Manifest
from node.inference.output import ModelOutput
from node.measure import ClassProbability, Lesion, RegionMeasurements
from node.results.errors import EmptyResultError
from node.results.seg import build_segmentation
from node.results.segments import segment_plan
from node.results.sources import read_sources
from node.results.sr import build_report
from node.results.templates import load_template
from node.results.uids import result_uids
from node.results.write import write_dataset


@dataclass(frozen=True)
class ResultSettings:
    """What the configuration and the job say about the objects to write."""

    results: ResultsConfig
    output: OutputConfig
    templates_dir: Path
    content_datetime: dt.datetime
    generation: int = 1


def write_result_objects(
    volume: Volume,
    manifest: Manifest,
    output: ModelOutput,
    regions: Mapping[int, RegionMeasurements],
    lesions: Sequence[Lesion],
    classes: Sequence[ClassProbability],
    settings: ResultSettings,
    out_dir: Path,
    totals: Mapping[str, RegionMeasurements] | None = None,
) -> dict[str, Path]:
    """Write seg.dcm (unless nothing was found) and sr.dcm into ``out_dir``.

    ``totals`` are the measurements of the manifest's [[totals]] by name (the SR reports them
    as the template's ``[totals]`` says).

    Raises ResultsError (or its SourceError/TemplateError kinds) with a reason when the objects
    cannot be made.
    """
    sources = read_sources(volume)
    series_uid = sources.series_instance_uid
    uids = result_uids(series_uid, manifest.name, manifest.version, settings.generation,
                       settings.output.uid_root)
    cfg = settings.results
    description = f"{cfg.series_description_prefix} {manifest.name}".strip()
    files: dict[str, Path] = {}
    segments = segment_plan(output)  # the labels present, counted once for SEG and SR
    seg = None
    if output.kind != "classification":
        try:
            seg = build_segmentation(
                sources, output,
                sop_instance_uid=uids.seg_instance, series_instance_uid=uids.seg_series,
                series_number=cfg.series_number_seg, series_description=f"{description} SEG",
                manufacturer=cfg.manufacturer, content_datetime=settings.content_datetime,
                model_description=manifest.description, seg_type=cfg.seg_type,
                institution_name=cfg.institution_name, uid_root=settings.output.uid_root,
                segments=segments,
            )
        except EmptyResultError:
            seg = None  # nothing found: the SR says so, and there is no SEG to show
    if seg is not None:
        files["seg"] = write_dataset(seg, out_dir / "seg.dcm").path
    template = load_template(manifest.sr_template, settings.templates_dir)
    report = build_report(
        sources, volume, output, regions, lesions, classes, template, seg,
        sop_instance_uid=uids.sr_instance, series_instance_uid=uids.sr_series,
        series_number=cfg.series_number_sr, series_description=f"{description} SR",
        manufacturer=cfg.manufacturer, content_datetime=settings.content_datetime,
        institution_name=cfg.institution_name, uid_root=settings.output.uid_root,
        segments=segments, totals=totals, total_specs=manifest.totals,
    )
    files["sr"] = write_dataset(report, out_dir / "sr.dcm").path
    return files
