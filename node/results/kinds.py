"""Output kinds as plug-ins: one writer per kind of result object, in one registry.

A kind (SEG, SR today; RT-STRUCT, KOS, GSPS, secondary capture later) is one module of
``node/results/`` that calls :func:`register_writer` with an object following
:class:`ResultWriter`: its name (the key of the job's files, the file ``<kind>.dcm``, the UID
derivation key and the ``[results.<kind>]`` sub-table), its SOP classes, the kinds whose objects
it uses, whether a finished job wants it, and how it builds its object from the job and the
:class:`SharedHeader` every object shares.

Writers run in registration order; a writer names the kinds it reads in ``after`` and these
must be registered before it (the SR reads the SEG), so the order is explicit and checked.
The pipeline (:func:`node.results.objects.write_result_objects`), the job's DICOM files
(:func:`result_kinds`) and the sender's names of SOP classes (:func:`sop_class_name`) all come
from here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from pydicom.dataset import Dataset

from node.config import KindResultsConfig, ResultsConfig
from node.imaging.volume import Volume
from node.inference.manifest import Manifest
from node.inference.output import ModelOutput
from node.measure import ClassProbability, Lesion, RegionMeasurements
from node.results.equipment import model_device_uid
from node.results.errors import ResultsError
from node.results.segments import Segment
from node.results.sources import SourceImages
from node.results.uids import KindUids


@dataclass(frozen=True)
class DeviceIdentity:
    """The model that made the objects (Contributing Equipment, SR device observer)."""

    model: str
    version: str
    description: str = ""

    def uid(self, root: str = "2.25.") -> str:
        return model_device_uid(self.model, self.version, root)


@dataclass(frozen=True)
class SharedHeader:
    """The header values every result object shares, in one typed value.

    Patient and study come from ``sources`` (the source headers, checked); ``series_number``
    and ``series_description`` are the kind's own (:meth:`for_kind`); the rest is the same for
    every object of a run.
    """

    sources: SourceImages
    manufacturer: str
    institution_name: str
    content_datetime: dt.datetime
    device: DeviceIdentity
    uid_root: str = "2.25."
    series_number: int = 0
    series_description: str = ""

    @property
    def study_instance_uid(self) -> str:
        return str(self.sources.datasets[0].StudyInstanceUID)

    @property
    def patient_id(self) -> str:
        return str(self.sources.datasets[0].get("PatientID", ""))

    def for_kind(self, series_number: int, series_description: str) -> SharedHeader:
        return replace(self, series_number=series_number, series_description=series_description)


@dataclass
class FinishedJob:
    """What a writer may use of a finished run: the volume, the model's output and its
    measurements, the objects the kinds before it built (``built``, by kind) and where the SR
    templates are."""

    volume: Volume
    manifest: Manifest
    output: ModelOutput
    regions: Mapping[int, RegionMeasurements]
    lesions: Sequence[Lesion]
    classes: Sequence[ClassProbability]
    totals: Mapping[str, RegionMeasurements] | None
    segments: tuple[Segment, ...]
    templates_dir: Path
    built: dict[str, Dataset] = field(default_factory=dict)


class ResultWriter(Protocol):
    """One output kind. ``build`` returns the object (None: nothing to write for this job);
    writing it atomically to ``<out_dir>/<kind>.dcm`` is the registry's part."""

    @property
    def kind(self) -> str:
        """Short name: files key, file name, UID key and ``[results.<kind>]`` sub-table."""
        ...

    @property
    def sop_classes(self) -> Mapping[str, str]:
        """SOP Class UID -> name, for every class the writer may write."""
        ...

    @property
    def after(self) -> tuple[str, ...]:
        """Kinds whose objects ``build`` reads from ``job.built`` (registered before it)."""
        ...

    @property
    def series_number(self) -> int:
        """Series Number when the configuration has no ``[results.<kind>]`` table."""
        ...

    def wants(self, job: FinishedJob, results: ResultsConfig) -> bool:
        ...

    def build(self, job: FinishedJob, header: SharedHeader, uids: KindUids,
              results: ResultsConfig) -> Dataset | None:
        ...


_WRITERS: dict[str, ResultWriter] = {}


def register_writer(writer: ResultWriter) -> ResultWriter:
    """Add an output kind; the kinds it reads must be registered already."""
    if writer.kind in _WRITERS:
        raise ResultsError(f"output kind {writer.kind!r} is registered already")
    missing = [k for k in writer.after if k not in _WRITERS]
    if missing:
        raise ResultsError(f"output kind {writer.kind!r} reads {missing}: register those first")
    _WRITERS[writer.kind] = writer
    return writer


def unregister_writer(kind: str) -> None:
    """Remove an output kind (tests); a kind that others read stays."""
    readers = [w.kind for w in _WRITERS.values() if kind in w.after]
    if readers:
        raise ResultsError(f"output kind {kind!r} is read by {readers}")
    _WRITERS.pop(kind, None)


def kind_table(results: ResultsConfig, kind: str) -> KindResultsConfig | None:
    """The ``[results.<kind>]`` table of a kind, if the configuration has one."""
    table = getattr(results, kind, None)
    return table if isinstance(table, KindResultsConfig) else None


def writers() -> tuple[ResultWriter, ...]:
    """The registered writers in the order they run."""
    return tuple(_WRITERS.values())


def result_kinds() -> tuple[str, ...]:
    """The kinds of the job's files that are DICOM result objects (to send)."""
    return tuple(_WRITERS)


def sop_class_name(sop_class_uid: str) -> str | None:
    """The name a writer gives a SOP class it writes, if any does."""
    for writer in _WRITERS.values():
        if sop_class_uid in writer.sop_classes:
            return writer.sop_classes[sop_class_uid]
    return None
