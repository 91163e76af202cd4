"""A model package's ``model.toml``, read into frozen dataclasses; every error names its key.

The format is documented in ``models/README.md``. Parsing checks the manifest on its own;
``node.inference.check`` also checks it against the ONNX graph.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from node.toml_table import TomlTable, read_toml

LAYOUTS_3D = ("NCDHW", "NDHWC")
LAYOUTS_2D = ("NCHW", "NHWC")
DTYPES = ("float32", "float16", "int16", "uint8", "int32", "int64")
NORMALIZATIONS = {
    "none": ((), ()),
    "window": (("center", "width"), ()),
    "zscore": ((), ("min", "max", "mean", "std")),
    "percentile": (("low", "high"), ()),
    "scale": ((), ("factor", "offset")),
}
ACTIVATIONS = {
    "segmentation": ("softmax", "sigmoid", "labelmap"),
    "detection": ("sigmoid", "none"),
    "classification": ("softmax", "sigmoid", "none"),
}
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class ManifestError(ValueError):
    """A manifest problem; the message starts with the file and the offending key."""


@dataclass(frozen=True)
class Code:
    """A coded concept, e.g. SNOMED CT ``("10200004", "SCT", "Liver")``."""

    value: str
    scheme: str
    meaning: str


@dataclass(frozen=True)
class Accepts:
    """Which series a model can read; the router ANDs this with its own rules."""

    modalities: tuple[str, ...]
    min_slices: int = 1
    body_parts: tuple[str, ...] = ()  # empty: any (or absent) BodyPartExamined
    max_slice_thickness: float | None = None

    def rejects(self, header: Any, instance_count: int) -> str | None:
        """Why a series does not fit (``None`` when it does).

        ``header`` is one instance's dataset: a pydicom Dataset or a mapping by keyword.
        """
        modality = str(_attr(header, "Modality") or "")
        if modality not in self.modalities:
            return f"modality {modality or '(none)'} is not one of {', '.join(self.modalities)}"
        if instance_count < self.min_slices:
            return f"{instance_count} slices; at least {self.min_slices} needed"
        if self.body_parts:
            part = str(_attr(header, "BodyPartExamined") or "").upper()
            if part not in self.body_parts:
                return f"body part {part or '(none)'} is not one of {', '.join(self.body_parts)}"
        if self.max_slice_thickness is not None:
            thickness = _attr(header, "SliceThickness")
            if thickness not in (None, "") and float(thickness) > self.max_slice_thickness:
                return f"slice thickness {float(thickness):g} mm > {self.max_slice_thickness:g} mm"
        return None

    def matches(self, header: Any, instance_count: int) -> bool:
        return self.rejects(header, instance_count) is None


@dataclass(frozen=True)
class Normalization:
    """One intensity normalisation; each one makes one input channel."""

    kind: str = "none"
    params: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class InputSpec:
    name: str
    layout: str = "NCDHW"
    dtype: str = "float32"
    spacing: tuple[float, float, float] | None = None  # (i, j, k) mm; None = native
    orientation: str = "native"
    normalize: tuple[Normalization, ...] = (Normalization(),)
    channels: int = 1
    # Fixed size the grid is resampled to, array order: (H, W) for 2D layouts, (D, H, W) for 3D.
    resize: tuple[int, ...] | None = None
    fill_value: float | None = None  # outside the source when resampling; None = minimum

    @property
    def is_2d(self) -> bool:
        return self.layout in LAYOUTS_2D


@dataclass(frozen=True)
class RunSpec:
    mode: str = "whole"  # whole | slicewise | sliding_window
    batch_size: int = 1
    patch_size: tuple[int, int, int] | None = None  # (D, H, W), array order
    overlap: float = 0.5
    gaussian_sigma: float = 0.125  # fraction of the patch size; 0 = flat blending
    mirror_axes: tuple[int, ...] = ()  # spatial axes 0=D (k), 1=H (j), 2=W (i)


@dataclass(frozen=True)
class OutputSpec:
    name: str
    kind: str = "segmentation"
    activation: str = "softmax"
    dtype: str = "float32"
    format: str = "heatmap"  # detection: heatmap | boxes
    threshold: float = 0.5
    map_back: str = "label_linear"  # nearest | label_linear


@dataclass(frozen=True)
class PostProcess:
    threshold: float | None = None
    min_size_mm3: float = 0.0
    largest_components: int = 0  # 0: keep all
    absorb: tuple[int, ...] = ()  # raw output values joined to this label where connected
    fill_holes: str = "none"  # none | 3d | axial


@dataclass(frozen=True)
class LabelSpec:
    value: int
    name: str
    channel: int | None
    category: Code | None = None
    type: Code | None = None
    colour: tuple[int, int, int] = (255, 0, 0)
    postprocess: PostProcess = PostProcess()


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    description: str
    licence: str
    intended_use: str
    for_clinical_use: bool
    accepts: Accepts
    input: InputSpec
    run: RunSpec
    output: OutputSpec
    labels: tuple[LabelSpec, ...]
    sr_template: str = ""
    measurements: tuple[Mapping[str, Any], ...] = ()
    path: Path = Path("model.toml")

    def label(self, value: int) -> LabelSpec:
        for spec in self.labels:
            if spec.value == value:
                return spec
        raise KeyError(value)


@dataclass(frozen=True)
class ModelPackage:
    """A model folder: its manifest and its ONNX file."""

    manifest: Manifest
    directory: Path

    @property
    def onnx_path(self) -> Path:
        return self.directory / "model.onnx"

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version


def load_package(directory: str | Path) -> ModelPackage:
    directory = Path(directory)
    return ModelPackage(load_manifest(directory / "model.toml"), directory)


def load_packages(models_dir: str | Path) -> dict[str, ModelPackage]:
    """Every package under ``models_dir`` by name; raises on the first invalid manifest."""
    out: dict[str, ModelPackage] = {}
    for toml in sorted(Path(models_dir).glob("*/model.toml")):
        package = load_package(toml.parent)
        out[package.name] = package
    return out


def load_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    where = _where(path)
    raw = read_toml(path, ManifestError, where, f"{where}: file does not exist")
    return parse_manifest(raw, path)


def parse_manifest(raw: dict[str, Any], path: str | Path = "model.toml") -> Manifest:
    path = Path(path)
    top = TomlTable(raw, _where(path), "", ManifestError)
    name = top.str("name", check=lambda v: None if _NAME.fullmatch(v) else
                   "letters, digits, '_', '.', '-' only")
    version = top.str("version")
    description = top.str("description")
    licence = top.str("licence")
    intended_use = top.str("intended_use")
    for_clinical_use = top.bool("for_clinical_use")
    sr_template = top.str("sr_template", "")
    accepts = _accepts(top.table("accepts"))
    input_spec = _input(top.table("input"))
    run = _run(top.table("run", {}), input_spec)
    output = _output(top.table("output"))
    if run.mirror_axes and (output.activation == "labelmap" or output.format == "boxes"):
        top.fail("run.mirror_axes", "mirroring averages scores; not possible with "
                 f"{'boxes' if output.format == 'boxes' else 'a label-map output'}")
    if output.format == "boxes" and run.mode != "whole":
        top.fail("run.mode", "box outputs need mode = 'whole'")
    labels = _labels(top, output)
    measurements = _measurements(top, {lab.value for lab in labels})
    top.done()
    return Manifest(
        name=name, version=version, description=description, licence=licence,
        intended_use=intended_use, for_clinical_use=for_clinical_use, accepts=accepts,
        input=input_spec, run=run, output=output, labels=labels, sr_template=sr_template,
        measurements=measurements, path=path,
    )


def _where(path: Path) -> str:
    parts = path.parts
    return str(Path(*parts[-3:])) if len(parts) >= 3 else str(path)


def _attr(header: Any, keyword: str) -> Any:
    if isinstance(header, Mapping):
        return header.get(keyword)
    return getattr(header, keyword, None)


def _accepts(t: TomlTable) -> Accepts:
    modalities = t.strings("modality")
    if not modalities:
        t.fail("modality", "must name at least one modality")
    out = Accepts(
        modalities=tuple(m.upper() for m in modalities),
        min_slices=t.int("min_slices", 1, low=1),
        body_parts=tuple(b.upper() for b in t.strings("body_part", ())),
        max_slice_thickness=t.num("max_slice_thickness", None, positive=True),
    )
    t.done()
    return out


def _normalization(t: TomlTable) -> Normalization:
    kind = t.str("kind", choices=tuple(NORMALIZATIONS))
    required, optional = NORMALIZATIONS[kind]
    params = {k: t.num(k) for k in required}
    params.update({k: t.num(k) for k in optional if t.has(k)})
    if kind == "window" and params["width"] <= 0:
        t.fail("width", "must be greater than 0")
    if kind == "percentile" and not 0 <= params["low"] < params["high"] <= 100:
        t.fail("high", "percentiles need 0 <= low < high <= 100")
    if kind == "zscore" and params.get("std", 1.0) <= 0:
        t.fail("std", "must be greater than 0")
    if "min" in params and "max" in params and params["min"] >= params["max"]:
        t.fail("max", "must be greater than min")
    t.done()
    return Normalization(kind, MappingProxyType(params))


def _input(t: TomlTable) -> InputSpec:
    name = t.str("name")
    layout = t.str("layout", choices=LAYOUTS_3D + LAYOUTS_2D)
    dtype = t.str("dtype", "float32", choices=DTYPES)
    spacing = None
    if t.has("spacing") and t.raw["spacing"] != "native":
        spacing = t.numbers("spacing", 3)
    else:
        t.seen.add("spacing")
    orientation = t.str("orientation", "native")
    if orientation != "native":
        from node.imaging.resample import _check_code

        try:
            _check_code(orientation)
        except ValueError as exc:
            t.fail("orientation", f"{exc}, or 'native'")
    raw_norm = t.raw.get("normalize", {"kind": "none"})
    t.seen.add("normalize")
    if isinstance(raw_norm, list):
        if not raw_norm:
            t.fail("normalize", "must hold at least one table")
        norms = tuple(
            _normalization(t.child(v, f"{t.prefix}normalize[{i}]."))
            for i, v in enumerate(raw_norm)
        )
    else:
        norms = (_normalization(t.child(raw_norm, f"{t.prefix}normalize.")),)
    channels = t.int("channels", len(norms), low=1)
    if len(norms) not in (1, channels):
        t.fail("channels", f"is {channels} but {len(norms)} normalisations are given "
                           "(give one, copied to every channel, or one per channel)")
    resize = t.numbers("resize", 2 if layout in LAYOUTS_2D else 3, None, integer=True)
    fill_value = t.num("fill_value", None)
    t.done()
    return InputSpec(name, layout, dtype, spacing, orientation, norms, channels, resize,
                     fill_value)


def _run(t: TomlTable, spec: InputSpec) -> RunSpec:
    modes = ("slicewise",) if spec.is_2d else ("whole", "sliding_window")
    mode = t.str("mode", modes[0], choices=modes)
    patch = t.numbers("patch_size", 3, None, integer=True)
    if mode == "sliding_window" and patch is None:
        t.fail("patch_size", "is required for mode = 'sliding_window' (3 integers D, H, W)")
    if mode != "sliding_window" and patch is not None:
        t.fail("patch_size", "only for mode = 'sliding_window'")
    axes = (1, 2) if spec.is_2d else (0, 1, 2)
    if mode == "sliding_window" and spec.resize is not None:
        t.fail("mode", "sliding_window and input.resize exclude each other")
    out = RunSpec(
        mode=mode,
        batch_size=t.int("batch_size", 1, low=1),
        patch_size=patch,
        overlap=t.num("overlap", 0.5, low=0.0, high=0.9),
        gaussian_sigma=t.num("gaussian_sigma", 0.125, low=0.0, high=10.0),
        mirror_axes=t.ints("mirror_axes", (), allowed=axes),
    )
    t.done()
    return out


def _output(t: TomlTable) -> OutputSpec:
    name = t.str("name")
    kind = t.str("kind", choices=tuple(ACTIVATIONS))
    fmt = t.str("format", "heatmap", choices=("heatmap", "boxes"))
    if fmt == "boxes" and kind != "detection":
        t.fail("format", "'boxes' is for kind = 'detection'")
    default_act = {"segmentation": "softmax", "detection": "sigmoid", "classification": "softmax"}
    activation = t.str("activation", default_act[kind], choices=ACTIVATIONS[kind])
    out = OutputSpec(
        name=name,
        kind=kind,
        activation=activation,
        dtype=t.str("dtype", "float32", choices=DTYPES),
        format=fmt,
        threshold=t.num("threshold", 0.5),
        map_back=t.str("map_back", "label_linear", choices=("nearest", "label_linear")),
    )
    t.done()
    return out


def _code(t: TomlTable, key: str) -> Code | None:
    if not t.has(key):
        t.seen.add(key)
        return None
    c = t.table(key)
    code = Code(c.str("value"), c.str("scheme", "SCT"), c.str("meaning"))
    c.done()
    return code


def _labels(top: TomlTable, output: OutputSpec) -> tuple[LabelSpec, ...]:
    tables = top.tables("labels")
    if not tables:
        top.fail("labels", "at least one [[labels]] entry is required")
    labels: list[LabelSpec] = []
    for t in tables:
        low = 0 if output.kind == "classification" else 1
        value = t.int("value", low=low)
        if output.kind == "classification" or output.activation == "softmax":
            default_channel: int | None = value
        elif output.activation == "labelmap":
            default_channel = None
        else:
            default_channel = value - 1
        channel = t.int("channel", default_channel, low=0)
        if output.activation == "labelmap" and channel is not None:
            t.fail("channel", "not used with activation = 'labelmap' (the value is the label)")
        colour = t.ints("colour", (255, 0, 0), unique=False)
        if len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
            t.fail("colour", f"must be 3 integers 0..255 (got {list(colour)!r})")
        post = _postprocess(t.table("postprocess", {}))
        labels.append(LabelSpec(
            value=value,
            name=t.str("name"),
            channel=channel,
            category=_code(t, "category"),
            type=_code(t, "type"),
            colour=tuple(int(c) for c in colour),  # type: ignore[arg-type]
            postprocess=post,
        ))
        t.done()
    for i, lab in enumerate(labels):
        for other in labels[:i]:
            if lab.value == other.value:
                top.fail(f"labels[{i}].value", f"duplicate label value {lab.value}")
            if lab.name == other.name:
                top.fail(f"labels[{i}].name", f"duplicate label name {lab.name!r}")
            if lab.channel is not None and lab.channel == other.channel:
                top.fail(f"labels[{i}].channel", f"channel {lab.channel} is used twice")
    return tuple(labels)


def _postprocess(t: TomlTable) -> PostProcess:
    raw_fill = t.raw.get("fill_holes", "none")
    t.seen.add("fill_holes")
    fill = {True: "3d", False: "none"}.get(raw_fill, raw_fill) if isinstance(raw_fill, bool) \
        else raw_fill
    if fill not in ("none", "3d", "axial"):
        t.fail("fill_holes", f"must be true, false, '3d' or 'axial' (got {raw_fill!r})")
    out = PostProcess(
        threshold=t.num("threshold", None, low=0.0, high=1.0),
        min_size_mm3=t.num("min_size_mm3", 0.0, low=0.0),
        largest_components=t.int("largest_components", 0, low=0),
        absorb=t.ints("absorb", ()),
        fill_holes=fill,
    )
    t.done()
    return out


def _measurements(top: TomlTable, values: set[int]) -> tuple[Mapping[str, Any], ...]:
    out = []
    for t in top.tables("measurements"):
        t.str("kind")
        labels = t.ints("labels", ())
        unknown = [v for v in labels if v not in values]
        if unknown:
            t.fail("labels", f"{unknown} are not declared label values")
        out.append(MappingProxyType(dict(t.raw)))  # the measure step reads the rest
    return tuple(out)
