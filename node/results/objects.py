"""One run's DICOM results: every registered output kind (node.results.kinds) the job wants;
today the SEG (when something was segmented) and the TID 1500 SR.

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
from node.results.kinds import DeviceIdentity, FinishedJob, SharedHeader, kind_table, writers
from node.results.segments import segment_plan
from node.results.sources import read_sources
from node.results.uids import kind_uids
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
    """Write every registered output kind the job wants into ``out_dir`` as ``<kind>.dcm``
    (node.results.kinds): seg.dcm (unless nothing was found) and sr.dcm today.

    ``totals`` are the measurements of the manifest's [[totals]] by name (the SR reports them
    as the template's ``[totals]`` says).

    Raises ResultsError (or its SourceError/TemplateError kinds) with a reason when the objects
    cannot be made.
    """
    sources = read_sources(volume)
    cfg = settings.results
    header = SharedHeader(
        sources=sources, manufacturer=cfg.manufacturer, institution_name=cfg.institution_name,
        content_datetime=settings.content_datetime,
        device=DeviceIdentity(manifest.name, manifest.version, manifest.description),
        uid_root=settings.output.uid_root,
    )
    job = FinishedJob(
        volume=volume, manifest=manifest, output=output, regions=regions, lesions=lesions,
        classes=classes, totals=totals,
        segments=segment_plan(output),  # the labels present, counted once for SEG and SR
        templates_dir=settings.templates_dir,
    )
    description = f"{cfg.series_description_prefix} {manifest.name}".strip()
    files: dict[str, Path] = {}
    for writer in writers():
        if not writer.wants(job, cfg):
            continue
        table = kind_table(cfg, writer.kind)
        number = table.series_number if table is not None else writer.series_number
        uids = kind_uids(writer.kind, sources.series_instance_uid, manifest.name,
                         manifest.version, settings.generation, settings.output.uid_root)
        ds = writer.build(job, header.for_kind(number, f"{description} {writer.kind.upper()}"),
                          uids, cfg)
        if ds is None:
            continue
        job.built[writer.kind] = ds
        files[writer.kind] = write_dataset(ds, out_dir / f"{writer.kind}.dcm").path
    return files
