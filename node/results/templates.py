"""SR templates: how a model's results become TID 1500 content, read from ``sr_templates/*.toml``.

A template is data (ARCHITECTURE.md principle 5): which groups to write, which measurements in
each, the code, unit and derivation of every measurement, and the finding type/site per label.
The format is documented in ``sr_templates/README.md``. Every error names the file and the key.

The node knows codes for its built-in measurement kinds (BUILTIN_MEASUREMENTS); a template
overrides them or adds codes for its own parametric measurements (e.g. ``LAA-950``) and relative
ones (``volume_percent``, e.g. ``percent_icv``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from node.inference.manifest import Code, LabelSpec, Manifest
from node.measure.requests import ALWAYS, declared_requests
from node.results.errors import TemplateError
from node.toml_table import REQUIRED, TomlTable, read_toml, toml_key

GRAPHICS = ("point", "polygon")
INTENSITY = "intensity"  # unit placeholder: the volume's intensity unit ([hnsf'U] on CT)

ATTENUATION = Code("112031", "DCM", "Attenuation Coefficient")
UCUM_ML = Code("ml", "UCUM", "milliliter")
UCUM_MM = Code("mm", "UCUM", "millimeter")
UCUM_NO_UNITS = Code("1", "UCUM", "no units")
UCUM_PERCENT = Code("%", "UCUM", "percent")
HOUNSFIELD = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
IMAGING_MEASUREMENT_REPORT = Code("126000", "DCM", "Imaging Measurement Report")
IMAGING_PROCEDURE = Code("363679005", "SCT", "Imaging procedure")
PRESENT = Code("52101004", "SCT", "Present")
ABSENT = Code("272519000", "SCT", "Absent")

# Caveats on a finding's measurements, written as qualitative evaluations "Quality Finding" =
# <what>, in the finding's own group, by every model. DCM 111052 "Quality Finding" names an
# observation that limits a result; DCM 130576 "Anatomy coverage incomplete" (PS3.16 CID 6315,
# a series quality finding) says the images do not cover the whole structure: a region cut by
# the field of view. A manifest flag gives its own value (``[[flags]] concept``), else
# UNDECIDED, a local code: no standard concept says "the algorithm could not decide part of
# this region".
QUALITY_FINDING = Code("111052", "DCM", "Quality Finding")
COVERAGE_INCOMPLETE = Code("130576", "DCM", "Anatomy coverage incomplete")
LOCAL_SCHEME = "99RADNODE"
LOCAL_SCHEME_NAME = "radnode local codes"
UNDECIDED = Code("UNDECIDED", LOCAL_SCHEME, "Region partly undecided by the algorithm")

# Names a template may list without defining: the region/lesion fields the node measures
# (RegionMeasurements.value) and a detection's or classifier's probability.
PROBABILITY = "probability"
# What the node measures of a manifest's [[totals]] (node.pipeline.measure_totals).
TOTAL_MEASUREMENTS = ("volume",)


@dataclass(frozen=True)
class MeasurementCode:
    """How one measurement name is coded: concept, unit (None: intensity unit), derivation."""

    name: str
    concept: Code
    unit: Code | None
    derivation: Code | None = None


BUILTIN_MEASUREMENTS: Mapping[str, MeasurementCode] = MappingProxyType({
    "volume": MeasurementCode("volume", Code("118565006", "SCT", "Volume"), UCUM_ML),
    "mean": MeasurementCode("mean", ATTENUATION, None, Code("373098007", "SCT", "Mean")),
    "std": MeasurementCode("std", ATTENUATION, None,
                           Code("386136009", "SCT", "Standard Deviation")),
    "min": MeasurementCode("min", ATTENUATION, None, Code("255605001", "SCT", "Minimum")),
    "max": MeasurementCode("max", ATTENUATION, None, Code("56851009", "SCT", "Maximum")),
    "max_diameter": MeasurementCode("max_diameter", Code("103339001", "SCT", "Long axis"),
                                    UCUM_MM),
    PROBABILITY: MeasurementCode(PROBABILITY, Code("111012", "DCM", "Certainty of Finding"),
                                 UCUM_NO_UNITS),
})


@dataclass(frozen=True)
class Finding:
    """What a label is, as TID 1411/1410/1501 say it: finding type and (optional) site."""

    finding_type: Code | None = None  # None: the label's segmented property type
    finding_site: Code | None = None  # None: none, or the label's type for a lateral label


@dataclass(frozen=True)
class LabelFinding:
    """A label's finding as written: type, site, and the site's laterality (TID 1419)."""

    finding_type: Code
    finding_site: Code | None = None
    laterality: Code | None = None  # SCT Left/Right of a split label; only with a site


@dataclass(frozen=True)
class GroupSpec:
    """One kind of measurement group: which labels, which measurements, how to name them."""

    labels: tuple[int, ...] | None  # None: every label
    measurements: tuple[str, ...]
    tracking_id: str  # format string with {name}, {label}, {rank}, {model}
    graphic: str = "point"  # detections: SCOORD3D POINT at the centroid or POLYGON (box)

    def includes(self, label: int) -> bool:
        return self.labels is None or label in self.labels


@dataclass(frozen=True)
class TotalsSpec:
    """The manifest's [[totals]] to report (TID 1501 groups): which, with what, named how."""

    names: tuple[str, ...] | None = None  # None: every total
    measurements: tuple[str, ...] = TOTAL_MEASUREMENTS
    tracking_id: str = "{name}"  # format string with {name}, {model}

    def includes(self, name: str) -> bool:
        return self.names is None or name in self.names


@dataclass(frozen=True)
class SRTemplate:
    name: str
    description: str = ""
    title: Code = IMAGING_MEASUREMENT_REPORT
    procedure_reported: tuple[Code, ...] = (IMAGING_PROCEDURE,)
    segments: GroupSpec | None = GroupSpec(None, ("volume", "mean", "std"), "{name}")
    detections: GroupSpec | None = GroupSpec(
        None, ("max_diameter", "volume", PROBABILITY), "{name} {rank}"
    )
    classifications: GroupSpec | None = GroupSpec(None, (PROBABILITY,), "{name}")
    report_absent: bool = True  # labels reported but not found: a TID 1501 "Absent" group
    totals: TotalsSpec | None = TotalsSpec()
    findings: Mapping[int, Finding] = field(default_factory=lambda: MappingProxyType({}))
    measurements: Mapping[str, MeasurementCode] = field(
        default_factory=lambda: BUILTIN_MEASUREMENTS
    )
    coding_schemes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    path: Path | None = None

    def measurement(self, name: str) -> MeasurementCode:
        try:
            return self.measurements[name]
        except KeyError:
            raise TemplateError(f"{self._where()}: measurement {name!r} has no code; add "
                                f"[measurements.{toml_key(name)}]") from None

    def finding(self, label: LabelSpec) -> LabelFinding:
        """The finding type, site and laterality of ``label``.

        The type defaults to the label's type. A lateral label (a split one: SCT Left/Right)
        carries its laterality on the finding site (TID 1419), whose default is then the label's
        type: "Hippocampus" with laterality "Left" for "Left hippocampus".
        """
        spec = self.findings.get(label.value, Finding())
        finding_type = spec.finding_type or label.type
        if finding_type is None:
            raise TemplateError(f"{self._where()}: label {label.value} ({label.name}) has no "
                                f"type code in the manifest; set [labels.{label.value}] "
                                "finding_type")
        if label.laterality is None:
            return LabelFinding(finding_type, spec.finding_site)
        site = spec.finding_site or label.type or finding_type
        return LabelFinding(finding_type, site, label.laterality)

    def check_manifest(self, manifest: Manifest) -> list[str]:
        """Problems between this template and a manifest (names not measured, unknown labels,
        unknown totals). Label values are those a run reports (a split label's left and right
        values, a ``reported_value``)."""
        problems = []
        values = {lab.value for lab in manifest.reported_labels}
        measured = set(ALWAYS) | {r.name for r in declared_requests(manifest.measurements)}
        for key, group in (("segments", self.segments), ("detections", self.detections),
                           ("classifications", self.classifications)):
            if group is None:
                continue
            for value in group.labels or ():
                if value not in values:
                    problems.append(f"{key}.labels: {value} is not a label of {manifest.name}")
        for value in self.findings:
            if value not in values:
                problems.append(f"labels.{value}: {value} is not a label of {manifest.name}")
        if self.segments is not None and manifest.output.kind == "segmentation":
            for name in self.segments.measurements:
                if name not in measured:
                    problems.append(f"segments.measurements: {name!r} is not measured by "
                                    f"{manifest.name} (add it to its [[measurements]])")
        if self.totals is not None:
            totals = {t.name for t in manifest.totals}
            for name in self.totals.names or ():
                if name not in totals:
                    problems.append(f"totals.names: {name!r} is not one of the [[totals]] of "
                                    f"{manifest.name}")
            for name in self.totals.measurements:
                if name not in TOTAL_MEASUREMENTS:
                    problems.append(f"totals.measurements: {name!r} is not measured of totals "
                                    f"(only {', '.join(TOTAL_MEASUREMENTS)})")
        for i, flag in enumerate(manifest.flags):
            scheme = flag.concept.scheme if flag.concept else LOCAL_SCHEME
            if scheme.startswith("99") and scheme != LOCAL_SCHEME and \
                    scheme not in self.coding_schemes:
                problems.append(f"coding_schemes: local scheme {scheme!r} of the manifest's "
                                f"flags[{i}].concept is not declared")
        return problems

    def _where(self) -> str:
        return str(self.path) if self.path else f"SR template {self.name!r}"


def load_template(name: str, folder: str | Path) -> SRTemplate:
    """``<folder>/<name>.toml`` as an SRTemplate; an empty name gives the built-in default."""
    if not name:
        return SRTemplate(name="default")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
        raise TemplateError(f"SR template name {name!r}: letters, digits, '_', '.', '-' only")
    path = Path(folder) / f"{name}.toml"
    raw = read_toml(path, TemplateError, str(path),
                    f"{path}: SR template {name!r} does not exist")
    return parse_template(raw, name, path)


def template_check(folder: str | Path) -> Callable[[Manifest], list[str]]:
    """What ``radnode models check`` finds wrong between a manifest and its SR template in
    ``folder`` (the ``report_check`` of :func:`node.inference.check.check_models`)."""

    def problems(manifest: Manifest) -> list[str]:
        try:
            template = load_template(manifest.sr_template, folder)
        except TemplateError as exc:
            return [f"sr_template: {exc}"]
        return [f"sr_template {manifest.sr_template!r}: {p}"
                for p in template.check_manifest(manifest)]

    return problems


def parse_template(raw: Mapping[str, Any], name: str = "template",
                   path: Path | None = None) -> SRTemplate:
    where = str(path) if path else f"SR template {name!r}"
    top = TomlTable(raw, where, "", TemplateError, list_unknown=True)
    description = top.str("description", "", nonempty=True)
    title = _code(top, "title", IMAGING_MEASUREMENT_REPORT)
    procedures = _codes(top, "procedure_reported", (IMAGING_PROCEDURE,))
    report_absent = top.bool("report_absent", True)
    schemes = top.table("coding_schemes", {})
    coding_schemes = {key: schemes.str(key) for key in list(schemes.raw)}
    schemes.done()
    default = SRTemplate(name=name)
    segments = _group(top, "segments", default.segments)
    detections = _group(top, "detections", default.detections)
    classifications = _group(top, "classifications", default.classifications)
    totals = _totals(top, default.totals)
    findings = _findings(top.table("labels", {}))
    measurements = dict(BUILTIN_MEASUREMENTS)
    table = top.table("measurements", {})
    for key in list(table.raw):
        measurements[key] = _measurement(key, table.table(key))
    table.done()
    top.done()
    for key, group in (("segments", segments), ("detections", detections),
                       ("classifications", classifications), ("totals", totals)):
        for n, mname in enumerate(group.measurements if group else ()):
            if mname not in measurements:
                top.fail(f"{key}.measurements[{n}]", f"{mname!r} has no code: define "
                         f"[measurements.{toml_key(mname)}] (built-in: "
                         f"{', '.join(BUILTIN_MEASUREMENTS)})")
    _check_schemes(top, coding_schemes, title, procedures, findings, measurements)
    return SRTemplate(
        name=name, description=description, title=title, procedure_reported=procedures,
        segments=segments, detections=detections, classifications=classifications,
        report_absent=report_absent, totals=totals, findings=MappingProxyType(findings),
        measurements=MappingProxyType(measurements),
        coding_schemes=MappingProxyType(coding_schemes), path=path,
    )


def _group(top: TomlTable, key: str, default: GroupSpec | None) -> GroupSpec | None:
    if not top.has(key):
        top.seen.add(key)
        return default
    if top.raw[key] is False:
        top.seen.add(key)
        return None
    t = top.table(key)
    assert default is not None
    labels = t.ints("labels", None, unique=False, low=1, nonempty=True,
                    what="label values > 0")
    spec = GroupSpec(
        labels=labels,
        measurements=t.strings("measurements", default.measurements, what="measurement names"),
        tracking_id=t.str("tracking_id", default.tracking_id, nonempty=True),
        graphic=(t.str("graphic", "point", choices=GRAPHICS, nonempty=True)
                 if key == "detections" else "point"),
    )
    try:
        spec.tracking_id.format(name="n", label=1, rank=1, model="m")
    except (KeyError, IndexError, ValueError) as exc:
        t.fail("tracking_id", f"unknown field or bad format {exc} (fields: name, label, rank, "
               "model)")
    dupes = sorted({m for m in spec.measurements if spec.measurements.count(m) > 1})
    if dupes:
        t.fail("measurements", f"repeated {dupes}")
    t.done()
    return spec


def _totals(top: TomlTable, default: TotalsSpec | None) -> TotalsSpec | None:
    """``[totals]`` (or ``totals = false``): the manifest's [[totals]] as TID 1501 groups."""
    if not top.has("totals"):
        top.seen.add("totals")
        return default
    if top.raw["totals"] is False:
        top.seen.add("totals")
        return None
    t = top.table("totals")
    assert default is not None
    names = t.strings("names", None, what="names of the manifest's [[totals]]")
    if names is not None and not names:
        t.fail("names", "must not be empty (leave it out for every total, or totals = false)")
    spec = TotalsSpec(
        names=names,
        measurements=t.strings("measurements", default.measurements, what="measurement names"),
        tracking_id=t.str("tracking_id", default.tracking_id, nonempty=True),
    )
    try:
        spec.tracking_id.format(name="n", model="m")
    except (KeyError, IndexError, ValueError) as exc:
        t.fail("tracking_id", f"unknown field or bad format {exc} (fields: name, model)")
    for key, items in (("names", spec.names or ()), ("measurements", spec.measurements)):
        dupes = sorted({m for m in items if items.count(m) > 1})
        if dupes:
            t.fail(key, f"repeated {dupes}")
    t.done()
    return spec


def _findings(table: TomlTable) -> dict[int, Finding]:
    out = {}
    for key in list(table.raw):
        if not key.isdigit() or int(key) < 1:
            table.fail(key, "label tables are named by label value, e.g. [labels.1]")
        t = table.table(key)
        out[int(key)] = Finding(_code(t, "finding_type", None), _code(t, "finding_site", None))
        t.done()
    table.done()
    return out


def _measurement(name: str, t: TomlTable) -> MeasurementCode:
    concept = _code(t, "concept")
    if t.has("unit") and t.raw["unit"] == INTENSITY:
        t.seen.add("unit")
        unit = None
    else:
        unit = _code(t, "unit")
        if unit.scheme != "UCUM":
            t.fail("unit", f"units are UCUM codes (scheme = \"UCUM\") or \"{INTENSITY}\"")
    derivation = _code(t, "derivation", None)
    t.done()
    return MeasurementCode(name, concept, unit, derivation)


def _check_schemes(top: TomlTable, schemes: Mapping[str, str], title: Code,
                   procedures: tuple[Code, ...], findings: Mapping[int, Finding],
                   measurements: Mapping[str, MeasurementCode]) -> None:
    """Local (99...) coding schemes must be declared so the SR can identify them."""
    used: list[tuple[str, Code]] = [("title", title)]
    used += [(f"procedure_reported[{n}]", c) for n, c in enumerate(procedures)]
    for value, f in findings.items():
        used += [(f"labels.{value}.{k}", c) for k, c in (("finding_type", f.finding_type),
                                                         ("finding_site", f.finding_site)) if c]
    for m in measurements.values():
        used += [(f"measurements.{toml_key(m.name)}.{k}", c) for k, c in
                 (("concept", m.concept), ("unit", m.unit), ("derivation", m.derivation)) if c]
    for key, code in used:
        if code.scheme.startswith("99") and code.scheme not in schemes:
            top.fail(key, f"local coding scheme {code.scheme!r} is not declared in "
                     "[coding_schemes]")


def _code(t: TomlTable, key: str, default: Any = REQUIRED) -> Any:
    value = t.get(key, default)
    if key not in t.raw:
        return value
    return _code_value(t, key, value)


def _codes(t: TomlTable, key: str, default: Any = REQUIRED) -> Any:
    value = t.get(key, default)
    if key not in t.raw:
        return value
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        t.fail(key, "must be a code table or a non-empty list of them")
    return tuple(_code_value(t, f"{key}[{n}]", v) for n, v in enumerate(value))


def _code_value(t: TomlTable, key: str, value: Any) -> Code:
    if not isinstance(value, dict):
        t.fail(key, "must be a code: { value = ..., scheme = ..., meaning = ... }")
    unknown = sorted(set(value) - {"value", "scheme", "meaning"})
    if unknown:
        t.fail(key, f"unknown keys {unknown} (a code has value, scheme, meaning)")
    for part, limit in (("value", 16), ("scheme", 16), ("meaning", 64)):
        text = value.get(part)
        if not isinstance(text, str) or not text.strip():
            t.fail(f"{key}.{part}", "is required (a non-empty string)")
        if len(text) > limit:
            t.fail(f"{key}.{part}", f"at most {limit} characters (got {len(text)})")
    return Code(value["value"], value["scheme"], value["meaning"])
