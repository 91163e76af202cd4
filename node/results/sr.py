"""A model's findings as a Comprehensive 3D SR with a TID 1500 Measurement Report (highdicom).

Groups follow the SR template: a volumetric ROI group (TID 1411) per SEG segment, a planar ROI
group (TID 1410) with an SCOORD3D region per detected lesion or box, a TID 1501 group per class
of a classifier, for labels the template reports that were not found a TID 1501 group saying
"Absent", and a TID 1501 group per total of the manifest (intracranial volume, total brain
volume). Every group carries a tracking identifier and a deterministic tracking UID; the finding
site of a lateral (split) label carries its laterality (TID 1419 concept modifier).

A region cut by the field of view (RegionMeasurements.truncated) and a label the model flagged
(ModelOutput.flags, a manifest's ``[[flags]]``) carry that caveat in their own group, as the
qualitative evaluation "Quality Finding" = "Anatomy coverage incomplete" or the flag's concept,
so that a reader of the SR sees that the measurements cover only part of the finding.

Totals are TID 1501 (measurements on the source images), not TID 1411: a TID 1411 group
references exactly one segment of a SEG, and a total is not one. The intracranial volume is the
brain mask of the model this one ran after (its own SEG, if any, is another object with another
grid of segments), and a total brain volume is a union of several of this SEG's segments.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from node import __version__
from node.imaging.volume import Volume
from node.inference.manifest import Code, LabelSpec, Total
from node.inference.output import Box, ModelOutput
from node.measure.results import ClassProbability, Lesion, RegionMeasurements
from node.results.equipment import model_device_uid, model_equipment, pin_generated_values
from node.results.errors import ResultsError
from node.results.seg import LABELMAP_SOP_CLASS, coded
from node.results.segments import Segment, segment_plan, segment_tracking_uid
from node.results.sources import SourceImages, prepare_sources
from node.results.templates import (
    ABSENT,
    ATTENUATION,
    COVERAGE_INCOMPLETE,
    HOUNSFIELD,
    LOCAL_SCHEME,
    LOCAL_SCHEME_NAME,
    PRESENT,
    PROBABILITY,
    QUALITY_FINDING,
    UCUM_NO_UNITS,
    UNDECIDED,
    GroupSpec,
    MeasurementCode,
    SRTemplate,
    TotalsSpec,
)
from node.uids import derive_uid

Group = (hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
         | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
         | hd.sr.MeasurementsAndQualitativeEvaluations)


def build_report(
    sources: SourceImages | Sequence[Dataset],
    volume: Volume,
    output: ModelOutput,
    measurements: Mapping[int, RegionMeasurements],
    lesions: Sequence[Lesion] | Mapping[int, Sequence[Lesion]],
    classes: Sequence[ClassProbability],
    template: SRTemplate,
    seg: Dataset | None,
    *,
    sop_instance_uid: str,
    series_instance_uid: str,
    series_number: int,
    series_description: str,
    manufacturer: str,
    content_datetime: dt.datetime,
    institution_name: str = "",
    uid_root: str = "2.25.",
    segments: tuple[Segment, ...] | None = None,
    totals: Mapping[str, RegionMeasurements] | None = None,
    total_specs: Sequence[Total] = (),
) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 report of one model run on one series.

    ``measurements`` maps label values to their RegionMeasurements (node.measure.measure_labels);
    ``lesions`` are a detection's lesions (a sequence: the first label's; or per label value);
    ``classes`` a classifier's probabilities (matched to labels by name); ``seg`` the SEG built
    from the same ``output`` (None when nothing was found or for classifiers). ``totals`` are
    the measurements of the manifest's [[totals]] by name (node.pipeline.measure_totals) and
    ``total_specs`` those totals (their type codes). Measurements that are None (an empty
    region's mean) are left out. ``content_datetime`` is the only time written. Raises
    ResultsError/TemplateError when content cannot be coded.
    """
    src = sources if isinstance(sources, SourceImages) else prepare_sources(list(sources))
    ctx = _Context(volume, output, template, sop_instance_uid, uid_root,
                   segment_plan(output) if segments is None else segments)
    groups: list[Group] = []
    found: set[int] = set()
    if seg is not None and template.segments is not None:
        groups += _segment_groups(ctx, template.segments, seg, src, measurements, found)
    if template.detections is not None:
        groups += _lesion_groups(ctx, template.detections, lesions, found)
        groups += _box_groups(ctx, template.detections, output.boxes, found)
    if template.classifications is not None:
        groups += _class_groups(ctx, template.classifications, classes, src, found)
    if template.report_absent and output.kind != "classification":
        groups += _absent_groups(ctx, found)
    if template.totals is not None and totals:
        groups += _total_groups(ctx, template.totals, totals, total_specs, src)

    device_uid = model_device_uid(output.model, output.version, uid_root)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid,
            name=output.model[:64],
            manufacturer_name=manufacturer[:64],
            model_name=f"{output.model} {output.version}"[:64],
        ),
    )
    if not groups:
        raise ResultsError(f"nothing to report for model {output.model}: no group in SR "
                           f"template {template.name!r} applies (and report_absent is off)")
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=[coded(c) for c in template.procedure_reported],
        imaging_measurements=groups,
        title=coded(template.title),
        referenced_images=list(src.datasets) if len(src.datasets) == 1 else None,
    )
    library = _image_library(src.datasets) if len(src.datasets) > 1 else None
    evidence = list(src.datasets) + ([seg] if seg is not None else [])
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=manufacturer,
        is_complete=True,
        institution_name=institution_name or None,
        series_description=series_description[:64],
        manufacturer_model_name="radnode",
        software_versions=__version__,
        content_date=content_datetime.date(),
        content_time=content_datetime.time(),
        series_date=content_datetime.date(),
        series_time=content_datetime.time(),
        coding_schemes=[
            CodingSchemeIdentificationItem(designator, name=name)
            for designator, name in sorted(ctx.coding_schemes().items())
        ] or None,
        contributing_equipment=[
            model_equipment(manufacturer, output.model, output.version, device_uid,
                            content_datetime)
        ],
    )
    if library is not None:
        _insert_image_library(sr, library)
    pin_generated_values(sr, content_datetime, uid_root)
    return sr


class _Context:
    """What every group builder needs: labels, the template, units and UID derivation."""

    def __init__(self, volume: Volume, output: ModelOutput, template: SRTemplate,
                 sr_uid: str, uid_root: str, segments: tuple[Segment, ...]) -> None:
        self.volume, self.output, self.template = volume, output, template
        self.segments = segments
        self.sr_uid, self.uid_root = sr_uid, uid_root
        self.labels = {lab.value: lab for lab in output.labels}
        self.algorithm = hd.sr.AlgorithmIdentification(
            name=output.model, version=output.version,
            family=codes.cid7162.ArtificialIntelligence,
        )
        self.schemes_used: set[str] = set()  # coding schemes of the codes the node adds

    def coding_schemes(self) -> dict[str, str]:
        """The template's local schemes, and those of the codes the node wrote itself (its own
        99RADNODE, a flag's): every local scheme in the SR gets an identification item."""
        schemes = dict(self.template.coding_schemes)
        for scheme in sorted(self.schemes_used - set(schemes)):
            if scheme == LOCAL_SCHEME:
                schemes[scheme] = LOCAL_SCHEME_NAME
            elif scheme.startswith("99"):
                raise ResultsError(f"a flag of model {self.output.model} uses the local coding "
                                   f"scheme {scheme!r}: declare it in [coding_schemes] of SR "
                                   f"template {self.template.name!r}")
        return schemes

    def caveats(self, value: int | None, region: RegionMeasurements | None
                ) -> list[hd.sr.QualitativeEvaluation]:
        """What limits a finding's measurements: the field of view cuts its region, or the
        model flagged the label (``value``) as partly undecided."""
        out = []
        if region is not None and region.truncated:
            out.append(hd.sr.QualitativeEvaluation(coded(QUALITY_FINDING),
                                                   coded(COVERAGE_INCOMPLETE)))
        for flag in self.output.flags_of(value) if value is not None else ():
            concept = flag.concept or UNDECIDED
            self.schemes_used.add(concept.scheme)
            out.append(hd.sr.QualitativeEvaluation(coded(QUALITY_FINDING), coded(concept)))
        return out

    def uid(self, *parts: str) -> str:
        return derive_uid(self.sr_uid, *parts, root=self.uid_root)

    def label(self, value: int) -> LabelSpec:
        try:
            return self.labels[value]
        except KeyError:
            raise ResultsError(f"{value} is not a label of model {self.output.model}") from None

    def tracking_id(self, group: GroupSpec, label: LabelSpec, rank: int = 0) -> str:
        text = group.tracking_id.format(name=label.name, label=label.value, rank=rank,
                                        model=self.output.model)
        return text[:64]

    def finding(self, label: LabelSpec) -> tuple[hd.sr.CodedConcept, list[hd.sr.FindingSite]]:
        """Finding type, and the finding site (with the label's laterality, TID 1419)."""
        finding = self.template.finding(label)
        sites = []
        if finding.finding_site is not None:
            sites.append(hd.sr.FindingSite(
                coded(finding.finding_site),
                laterality=coded(finding.laterality) if finding.laterality else None,
            ))
        return coded(finding.finding_type), sites

    def unit(self, code: MeasurementCode) -> Code:
        if code.unit is not None:
            return code.unit
        if code.concept == ATTENUATION and self.volume.modality.upper() != "CT":
            raise ResultsError(
                f"measurement {code.name!r}: the built-in code (Attenuation Coefficient, HU) "
                f"is for CT, this is {self.volume.modality or 'an unknown modality'}: define "
                f"[measurements.{code.name}] in SR template {self.template.name!r}"
            )
        return HOUNSFIELD if self.volume.modality.upper() == "CT" else UCUM_NO_UNITS

    def measurement(self, name: str, value: float | None) -> hd.sr.Measurement | None:
        if value is None or not np.isfinite(value):
            return None
        code = self.template.measurement(name)
        return hd.sr.Measurement(
            name=coded(code.concept),
            value=float(value),
            unit=coded(self.unit(code)),
            derivation=coded(code.derivation) if code.derivation else None,
        )


def _region_measurements(ctx: _Context, group: GroupSpec, region: RegionMeasurements,
                         probability: float | None = None) -> list[hd.sr.Measurement]:
    out = []
    for name in group.measurements:
        if name == PROBABILITY:
            value = probability
        else:
            try:
                value = region.value(name)
            except KeyError:
                value = None  # not measured for this model: left out
        item = ctx.measurement(name, value)
        if item is not None:
            out.append(item)
    return out


def _segment_groups(ctx: _Context, group: GroupSpec, seg: Dataset, src: SourceImages,
                    measurements: Mapping[int, RegionMeasurements], found: set[int]
                    ) -> list[Group]:
    out: list[Group] = []
    for segment in ctx.segments:
        label = segment.label
        found.add(label.value)
        if not group.includes(label.value):
            continue
        finding_type, sites = ctx.finding(label)
        region = measurements.get(label.value)
        tracking = hd.sr.TrackingIdentifier(
            uid=segment_tracking_uid(str(seg.SOPInstanceUID), label.value, ctx.uid_root),
            identifier=ctx.tracking_id(group, label),
        )
        items = _region_measurements(ctx, group, region) if region else []
        evaluations = ctx.caveats(label.value, region)
        if str(seg.SOPClassUID) == LABELMAP_SOP_CLASS:
            # DCMTK (dsrdump) and dciodvfy do not know Label Map SEG as a segmentation and
            # reject a Referenced Segment to it: a TID 1501 group on the slices holding the
            # label instead, with the SEG segment's tracking UID and the SEG in the evidence.
            out.append(hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking,
                finding_type=finding_type,
                finding_sites=sites or None,
                algorithm_id=ctx.algorithm,
                measurements=items or None,
                qualitative_evaluations=evaluations or None,
                source_images=_source_images(src, region),
            ))
            continue
        out.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=str(seg.SOPClassUID),
                sop_instance_uid=str(seg.SOPInstanceUID),
                segment_number=segment.number,
                source_series=hd.sr.SourceSeriesForSegmentation(src.series_instance_uid),
            ),
            finding_type=finding_type,
            finding_sites=sites or None,
            algorithm_id=ctx.algorithm,
            measurements=items or None,
            qualitative_evaluations=evaluations or None,
        ))
    return out


def _lesion_groups(ctx: _Context, group: GroupSpec,
                   lesions: Sequence[Lesion] | Mapping[int, Sequence[Lesion]],
                   found: set[int]) -> list[Group]:
    if isinstance(lesions, Mapping):
        by_label = dict(lesions)
    elif lesions:
        by_label = {ctx.output.labels[0].value: lesions}
    else:
        by_label = {}
    out: list[Group] = []
    for value, items in sorted(by_label.items()):
        label = ctx.label(value)
        if items:
            found.add(value)
        if not group.includes(value):
            continue
        finding_type, sites = ctx.finding(label)
        for lesion in items:
            m = lesion.measurements
            if m.centroid_lps is None:
                continue
            out.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=ctx.uid("lesion", str(value), str(lesion.rank)),
                    identifier=ctx.tracking_id(group, label, lesion.rank),
                ),
                referenced_region=_region(ctx, group, m),
                finding_type=finding_type,
                finding_sites=sites or None,
                algorithm_id=ctx.algorithm,
                measurements=_region_measurements(ctx, group, m, lesion.max_probability),
                qualitative_evaluations=ctx.caveats(None, m) or None,
            ))
    return out


def _box_groups(ctx: _Context, group: GroupSpec, boxes: Sequence[Box], found: set[int]
                ) -> list[Group]:
    out: list[Group] = []
    for rank, box in enumerate(boxes, start=1):
        label = ctx.label(box.label)
        found.add(box.label)
        if not group.includes(box.label):
            continue
        finding_type, sites = ctx.finding(label)
        lo, hi = np.asarray(box.lps_min, float), np.asarray(box.lps_max, float)
        centre = (lo + hi) / 2
        if group.graphic == "polygon":
            corners = _axial_rectangle(ctx.volume, np.asarray(box.index_min, float),
                                       np.asarray(box.index_max, float))
            region = hd.sr.ImageRegion3D(hd.sr.GraphicTypeValues3D.POLYGON, corners,
                                         ctx.volume.frame_of_reference_uid)
        else:
            region = hd.sr.ImageRegion3D(hd.sr.GraphicTypeValues3D.POINT, centre[None, :],
                                         ctx.volume.frame_of_reference_uid)
        items = []
        for name in group.measurements:
            value = box.score if name == PROBABILITY else (
                float(np.linalg.norm(hi - lo)) if name == "max_diameter" else None)
            if (item := ctx.measurement(name, value)) is not None:
                items.append(item)
        out.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=ctx.uid("box", str(rank)), identifier=ctx.tracking_id(group, label, rank),
            ),
            referenced_region=region,
            finding_type=finding_type,
            finding_sites=sites or None,
            algorithm_id=ctx.algorithm,
            measurements=items or None,
        ))
    return out


def _region(ctx: _Context, group: GroupSpec, m: RegionMeasurements) -> hd.sr.ImageRegion3D:
    """SCOORD3D of a lesion: its centroid, or its box outline on the centroid's slice."""
    frame = ctx.volume.frame_of_reference_uid
    if group.graphic == "polygon" and m.bbox_index is not None and m.centroid_lps is not None:
        (i0, j0, _), (i1, j1, _) = m.bbox_index
        k = float(np.rint(ctx.volume.patient_to_index(np.asarray(m.centroid_lps))[2]))
        corners = _axial_rectangle(ctx.volume, np.array([i0 - 0.5, j0 - 0.5, k]),
                                   np.array([i1 + 0.5, j1 + 0.5, k]))
        return hd.sr.ImageRegion3D(hd.sr.GraphicTypeValues3D.POLYGON, corners, frame)
    return hd.sr.ImageRegion3D(hd.sr.GraphicTypeValues3D.POINT,
                               np.asarray([m.centroid_lps], dtype=float), frame)


def _axial_rectangle(volume: Volume, index_min: np.ndarray, index_max: np.ndarray
                     ) -> np.ndarray:
    """Closed polygon (5 points, LPS) of an (i, j) box on the slice of the boxes' middle k."""
    k = float(np.rint((index_min[2] + index_max[2]) / 2))
    (i0, j0), (i1, j1) = index_min[:2], index_max[:2]
    ijk = np.array([[i0, j0, k], [i1, j0, k], [i1, j1, k], [i0, j1, k], [i0, j0, k]])
    return volume.index_to_patient(ijk)


def _class_groups(ctx: _Context, group: GroupSpec, classes: Sequence[ClassProbability],
                  src: SourceImages, found: set[int]) -> list[Group]:
    by_name = {lab.name: lab for lab in ctx.output.labels}
    out: list[Group] = []
    for cls in classes:
        label = by_name.get(cls.name)
        if label is None:
            raise ResultsError(f"class {cls.name!r} is not a label of model {ctx.output.model}")
        if cls.present:
            found.add(label.value)
        if not group.includes(label.value):
            continue
        finding_type, sites = ctx.finding(label)
        evaluations = []
        if cls.present is not None:
            evaluations.append(hd.sr.QualitativeEvaluation(
                finding_type, coded(PRESENT if cls.present else ABSENT)))
        items = [m for name in group.measurements if (m := ctx.measurement(
            name, cls.probability if name == PROBABILITY else None)) is not None]
        out.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=ctx.uid("class", str(label.value)),
                identifier=ctx.tracking_id(group, label),
            ),
            finding_type=finding_type,
            finding_sites=sites or None,
            algorithm_id=ctx.algorithm,
            measurements=items or None,
            qualitative_evaluations=evaluations or None,
            source_images=_source_images(src),
        ))
    return out


def _absent_groups(ctx: _Context, found: set[int]) -> list[Group]:
    """TID 1501 groups saying "<finding type>: Absent" for reported labels not found."""
    spec = ctx.template.segments if ctx.output.kind == "segmentation" else ctx.template.detections
    if spec is None:
        return []
    out: list[Group] = []
    for label in ctx.output.labels:
        if label.value in found or not spec.includes(label.value):
            continue
        finding_type, sites = ctx.finding(label)
        out.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=ctx.uid("absent", str(label.value)),
                identifier=ctx.tracking_id(spec, label)[:64],
            ),
            finding_type=finding_type,
            finding_sites=sites or None,
            algorithm_id=ctx.algorithm,
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(finding_type, coded(ABSENT))],
        ))
    return out


def _total_groups(ctx: _Context, spec: TotalsSpec, totals: Mapping[str, RegionMeasurements],
                  specs: Sequence[Total], src: SourceImages) -> list[Group]:
    """A TID 1501 group per total (the manifest's order): finding type and site its type code,
    its measurements (the volume), on the source slices that hold it."""
    by_name = {t.name: t for t in specs}
    names = [t.name for t in specs if t.name in totals]
    names += [name for name in totals if name not in by_name]
    out: list[Group] = []
    for name in names:
        if not spec.includes(name):
            continue
        region = totals[name]
        total = by_name.get(name)
        code = total.type if total is not None else None
        items = []
        for mname in spec.measurements:
            try:
                value = region.value(mname)
            except KeyError:
                value = None
            if (item := ctx.measurement(mname, value)) is not None:
                items.append(item)
        identifier = spec.tracking_id.format(name=name, model=ctx.output.model)[:64]
        out.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=ctx.uid("total", name), identifier=identifier,
            ),
            finding_type=coded(code) if code else None,
            finding_sites=[hd.sr.FindingSite(coded(code))] if code else None,
            algorithm_id=ctx.algorithm,
            measurements=items or None,
            qualitative_evaluations=ctx.caveats(None, region) or None,
            source_images=_source_images(src, region if not region.is_empty else None),
        ))
    return out


def _image_library(datasets: Sequence[Dataset]) -> hd.sr.ContainerContentItem:
    """TID 1600 with the descriptors all slices share at group level, one IMAGE per slice.

    highdicom's ImageLibrary repeats 16 descriptors under every image (4,800 content items for
    300 slices: 8 s to build and write); TID 1602 descriptors are optional per entry and may
    sit on the group for what the images share, which for one series is all but the position.
    """
    shared = [item for item in hd.sr.ImageLibraryEntryDescriptors(datasets[0])
              if not str(item.name.meaning).startswith("Image Position")
              and (item.name.value != "112225" or _same(datasets, "SliceThickness"))]
    group = hd.sr.ContainerContentItem(name=codes.DCM.ImageLibraryGroup,
                                       relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    group.ContentSequence = hd.sr.ContentSequence(shared)
    source = hd.sr.CodedConcept("260753009", "SCT", "Source")
    for ds in datasets:
        group.ContentSequence.append(hd.sr.ImageContentItem(
            name=source,
            referenced_sop_class_uid=str(ds.SOPClassUID),
            referenced_sop_instance_uid=str(ds.SOPInstanceUID),
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        ))
    library = hd.sr.ContainerContentItem(name=codes.DCM.ImageLibrary,
                                         relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    library.ContentSequence = hd.sr.ContentSequence([group])
    return library


def _insert_image_library(sr: hd.sr.Comprehensive3DSR,
                          library: hd.sr.ContainerContentItem) -> None:
    """Put the image library before Imaging Measurements, once the SR is built.

    Given to the constructor, highdicom would deep-copy the library's 300 items, parse the
    copy back into content items and search it for evidence (0.15-0.2 s of the SR's 0.3 s).
    Its images are the sources, all of which are given as evidence, so the search could only
    confirm that. The library goes into the dataset's content tree (what is written) and into
    ``sr.content`` (highdicom's parsed view of it), shared: neither is changed afterwards.
    """
    roots = [sr.ContentSequence]
    if sr.content[0].ContentSequence is not sr.ContentSequence:
        roots.append(sr.content[0].ContentSequence)
    for content in roots:
        at = next(n for n, item in enumerate(content)
                  if item.name == codes.DCM.ImagingMeasurements)
        content.insert(at, library)


def _same(datasets: Sequence[Dataset], keyword: str) -> bool:
    return len({str(ds.get(keyword)) for ds in datasets}) == 1


def _source_images(src: SourceImages, region: RegionMeasurements | None = None
                   ) -> list[hd.sr.SourceImageForMeasurementGroup]:
    """The source images (all, or the slices of ``region``'s bounding box)."""
    n_slices = len(src.frame_order) if src.frame_order is not None else len(src.datasets)
    ks = range(n_slices)
    if region is not None and region.bbox_index is not None:
        ks = range(region.bbox_index[0][2], region.bbox_index[1][2] + 1)
    if src.frame_order is not None:
        ds = src.datasets[0]
        frames = sorted(src.frame_order.index(k) + 1 for k in ks)
        return [hd.sr.SourceImageForMeasurementGroup(
            str(ds.SOPClassUID), str(ds.SOPInstanceUID), referenced_frame_numbers=frames)]
    return [hd.sr.SourceImageForMeasurementGroup(
        str(src.datasets[k].SOPClassUID), str(src.datasets[k].SOPInstanceUID)) for k in ks]
