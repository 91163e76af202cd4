"""A model package's ``model.toml``, read into frozen dataclasses; every error names its key.

The format is documented in ``models/README.md``. Parsing checks the manifest on its own;
``node.inference.check`` also checks it against the ONNX graph.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
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
    "zscore": ((), ("min", "max", "mean", "std", "ddof")),
    "percentile": (("low", "high"), ()),
    "scale": ((), ("factor", "offset")),
    "minmax": ((), ()),
    "robust_range": ((), ("f_low", "f_high", "bins", "out_max")),
}
# Where a normalisation takes its statistics: the stage's crop (default), its whole grid before
# the crop, the source volume, or an earlier stage's input (``stage:<name>``).
STATISTICS_FROM = ("crop", "grid", "source")
CONNECTIVITY = (6, 26)
SLICE_COMBINE = ("mean", "max", "top_k_mean")
ACTIVATIONS = {
    "segmentation": ("softmax", "sigmoid", "labelmap", "none"),
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
    """One intensity normalisation; each one makes one input channel.

    ``statistics`` says which voxels its statistics (percentiles, mean, range) come from;
    ``then`` lists further steps applied after it to the same channel.
    """

    kind: str = "none"
    params: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    statistics: str = "crop"
    then: tuple[Normalization, ...] = ()


@dataclass(frozen=True)
class Conform:
    """A fixed grid, as FreeSurfer conforms a T1: ``size`` voxels (i, j, k) of ``spacing`` mm in
    ``orientation``, centred on the centre of the source's field of view."""

    size: tuple[int, int, int] = (256, 256, 256)
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    orientation: str = "LIA"
    interpolation: str = "linear"


@dataclass(frozen=True)
class CropSpec:
    """A box cut from the stage's grid before normalisation, pasted back after inference.

    ``source`` is ``"threshold"`` (voxels above ``fraction`` of the intensity range) or the name
    of an earlier stage or prerequisite model whose mask gives the box. A plane belongs to the
    box when more than ``min_plane_fraction`` of its voxels are in it. The box grows by
    ``margin`` voxels and ``margin_fraction`` of its size on each side; with ``resize`` the crop
    is resampled to that shape (D, H, W) and its outputs back.
    """

    source: str
    fraction: float = 0.0
    min_plane_fraction: float = 0.0
    margin: int = 0
    margin_fraction: float = 0.0
    resize: tuple[int, int, int] | None = None
    interpolation: str = "nearest"
    within: str = ""  # an earlier stage or the 'after' model: the box stays inside its box
    within_margin: int = 0  # voxels around that box


@dataclass(frozen=True)
class MaskSpec:
    """How an earlier stage's output becomes the mask later stages read."""

    channel: int = 1
    threshold: float = 0.5
    largest_component: bool = False
    connectivity: int = 26
    fill_holes: bool = False


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
    conform: Conform | None = None
    resize_interpolation: str = "linear"
    pad_multiple: int = 1  # each spatial size padded up to a multiple of this

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
    combine: str = "mean"  # slice-wise classification: mean | max | top_k_mean
    top_k: int = 1


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
    # components touching the edge of the volume (pieces of an organ the field of view cut
    # apart) stay when at least this share of the largest
    cut_pieces: float = 0.0
    # components touching these labels (cleaned before this one) stay, whatever their size
    keep_touching: tuple[int, ...] = ()
    absorb: tuple[int, ...] = ()  # raw output values joined to this label where connected
    fill_holes: str = "none"  # none | 3d | axial


@dataclass(frozen=True)
class Split:
    """A paired structure the network does not lateralise: the label values its left and right
    parts get, on either side of the brain's mid-sagittal plane."""

    left: int
    right: int


LEFT = Code("7771000", "SCT", "Left")
RIGHT = Code("24028007", "SCT", "Right")


@dataclass(frozen=True)
class LabelSpec:
    value: int
    name: str
    channel: int | None
    category: Code | None = None
    type: Code | None = None
    colour: tuple[int, int, int] = (255, 0, 0)
    postprocess: PostProcess = PostProcess()
    laterality: Code | None = None  # SNOMED CT Left / Right, for a split label
    split: Split | None = None
    reported_value: int | None = None  # the value written for it, when not ``value``

    def sides(self) -> tuple[LabelSpec, ...]:
        """The labels a run reports for this one: itself (under its reported value), or its
        left and right parts."""
        if self.split is None:
            if self.reported_value is not None:
                return (replace(self, value=self.reported_value, reported_value=None),)
            return (self,)
        return tuple(
            replace(self, value=value, name=f"{side.meaning} {_lower_first(self.name)}",
                    laterality=side, split=None)
            for value, side in ((self.split.left, LEFT), (self.split.right, RIGHT))
        )


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:] if name[1:2].islower() or len(name) == 1 else name


@dataclass(frozen=True)
class LabelsPostProcess:
    """Steps on the union of every label, after each label's own ``postprocess``."""

    largest_component: bool = False
    connectivity: int = 6
    fill_holes: bool = False
    within: str = ""  # an earlier stage or the prerequisite model: labels outside become 0


@dataclass(frozen=True)
class Total:
    """A region reported beside the labels: the union of some labels (total brain volume), or
    of the labels of the model this one ran after (intracranial volume from the brain mask)."""

    name: str
    labels: tuple[int, ...] = ()  # reported label values; empty with from_after
    from_after: bool = False
    type: Code | None = None


@dataclass(frozen=True)
class FlagSpec:
    """A flag the model raises itself: a second graph output, a per-voxel mask (the shape of
    the label output) of the voxels whose label it could not decide. A listed label whose final
    voxels overlap the mask is flagged, in the job's result and as a qualitative evaluation in
    its SR group, so that a volume the model is unsure of is never reported as if it were sure.
    """

    output: str  # the graph output holding the mask (non-zero: undecided)
    name: str  # shown in the result and the SR, e.g. "Undecided field of view"
    labels: tuple[int, ...]  # reported label values that can be flagged
    concept: Code | None = None  # the SR qualitative evaluation's value; None: the node's own


@dataclass(frozen=True)
class Stage:
    """One network of a package: its ONNX file, grid, crop, intensities, run and output.

    The last stage makes the labels; an earlier one makes a mask (``mask``) that later stages
    may crop to, take statistics from, or keep their labels within.
    """

    name: str
    file: str
    input: InputSpec
    run: RunSpec
    output: OutputSpec
    crop: CropSpec | None = None
    mask: MaskSpec | None = None


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    description: str
    licence: str
    intended_use: str
    for_clinical_use: bool
    accepts: Accepts
    stages: tuple[Stage, ...]
    labels: tuple[LabelSpec, ...]
    sr_template: str = ""
    measurements: tuple[Mapping[str, Any], ...] = ()
    path: Path = Path("model.toml")
    after: str = ""  # a model run first on the same volume (its mask may crop or bound this one)
    postprocess: LabelsPostProcess = LabelsPostProcess()
    totals: tuple[Total, ...] = ()
    flags: tuple[FlagSpec, ...] = ()

    @property
    def input(self) -> InputSpec:
        return self.stages[-1].input

    @property
    def run(self) -> RunSpec:
        return self.stages[-1].run

    @property
    def output(self) -> OutputSpec:
        return self.stages[-1].output

    @property
    def reported_labels(self) -> tuple[LabelSpec, ...]:
        """The labels a run gives back: paired ones split into left and right."""
        return tuple(side for lab in self.labels for side in lab.sides())

    def label(self, value: int) -> LabelSpec:
        """The label reported under ``value`` (else the network's label of that value)."""
        for spec in (*self.reported_labels, *self.labels):
            if spec.value == value:
                return spec
        raise KeyError(value)


@dataclass(frozen=True)
class ModelPackage:
    """A model folder: its manifest and its ONNX file(s), one per stage."""

    manifest: Manifest
    directory: Path

    @property
    def onnx_path(self) -> Path:
        """The last stage's graph (the one that makes the labels)."""
        return self.directory / self.manifest.stages[-1].file

    def stage_path(self, stage: Stage) -> Path:
        return self.directory / stage.file

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
    after = top.str("after", "", check=lambda v: None if _NAME.fullmatch(v) and v != name else
                    "the name of another model package")
    accepts = _accepts(top.table("accepts"))
    if top.has("stages"):
        for key in ("input", "run", "output", "crop"):
            if top.has(key):
                top.fail(key, "with [[stages]], each stage has its own input, run, output, crop")
        tables = top.tables("stages")
        if not tables:
            top.fail("stages", "must hold at least one stage")
        stages: list[Stage] = []
        for i, t in enumerate(tables):
            stages.append(_stage(t, t.str("name", check=lambda v: None if _NAME.fullmatch(v)
                                          else "letters, digits, '_', '.', '-' only"),
                                 t.str("file"), stages, after, final=i == len(tables) - 1))
            t.done()
    else:
        stages = [_stage(top, name, "model.onnx", [], after, final=True)]
    names = [st.name for st in stages]
    for i, st in enumerate(stages):
        if st.name in names[:i] or st.name == after:
            top.fail(f"stages[{i}].name", f"duplicate stage name {st.name!r}")
    output, run = stages[-1].output, stages[-1].run
    labels = _labels(top, output)
    if run.combine != "mean" and not (output.kind == "classification" and run.mode == "slicewise"):
        top.fail("run.combine", "only for slice-wise classification")
    postprocess = _labels_postprocess(top.table("postprocess", {}), _sources(stages[:-1], after))
    reported = [side.value for lab in labels for side in lab.sides()]
    totals = _totals(top, set(reported), after)
    measurements = _measurements(top, set(reported), {t.name for t in totals})
    flags = _flags(top, stages, reported)
    top.done()
    return Manifest(
        name=name, version=version, description=description, licence=licence,
        intended_use=intended_use, for_clinical_use=for_clinical_use, accepts=accepts,
        stages=tuple(stages), labels=labels, sr_template=sr_template,
        measurements=measurements, path=path, after=after, postprocess=postprocess,
        totals=totals, flags=flags,
    )


def _sources(earlier: list[Stage], after: str) -> tuple[str, ...]:
    """Names of the masks a stage may use: the earlier stages' and the prerequisite model's."""
    return tuple(st.name for st in earlier) + ((after,) if after else ())


def _stage(t: TomlTable, name: str, file: str, earlier: list[Stage], after: str, final: bool
           ) -> Stage:
    """One stage from ``t`` (the top level for a one-stage package, or a ``[[stages]]`` entry)."""
    if not file.endswith(".onnx") or "/" in file or "\\" in file:
        t.fail("file", f"must be an .onnx file name in the package folder (got {file!r})")
    sources = _sources(earlier, after)
    input_spec = _input(t.table("input"), tuple(st.name for st in earlier))
    run = _run(t.table("run", {}), input_spec)
    output = _output(t.table("output"))
    if run.mirror_axes and (output.activation == "labelmap" or output.format == "boxes"):
        t.fail("run.mirror_axes", "mirroring averages scores; not possible with "
               f"{'boxes' if output.format == 'boxes' else 'a label-map output'}")
    if output.format == "boxes" and run.mode != "whole":
        t.fail("run.mode", "box outputs need mode = 'whole'")
    crop = _crop(t.table("crop"), sources, input_spec) if t.has("crop") else None
    if crop is None:
        t.seen.add("crop")
    mask = None
    if not final:
        if output.kind != "segmentation":
            t.fail("output.kind", "an earlier stage makes a mask: kind = 'segmentation'")
        mask = _mask(t.table("mask", {}))
    elif t.has("mask"):
        t.fail("mask", "only for earlier stages (the last stage's labels are [[labels]])")
    return Stage(name, file, input_spec, run, output, crop, mask)


def _crop(t: TomlTable, sources: tuple[str, ...], spec: InputSpec) -> CropSpec:
    source = t.str("source", choices=("threshold", *sources))
    fraction = t.num("fraction", 0.0, low=0.0, high=1.0)
    if source == "threshold" and not t.has("fraction"):
        t.fail("fraction", "is required with source = 'threshold'")
    resize = t.numbers("resize", 3, None, integer=True)
    if resize is not None and spec.is_2d:
        t.fail("resize", "crops of 2D layouts are not resized")
    out = CropSpec(
        source=source,
        fraction=fraction,
        min_plane_fraction=t.num("min_plane_fraction", 0.0, low=0.0, high=1.0),
        margin=t.int("margin", 0),
        margin_fraction=t.num("margin_fraction", 0.0, low=0.0, high=10.0),
        resize=resize,
        interpolation=t.str("interpolation", "nearest", choices=("nearest", "linear")),
        within=t.str("within", "", choices=sources) if sources else t.str("within", ""),
        within_margin=t.int("within_margin", 0),
    )
    if out.within and not sources:
        t.fail("within", "needs an earlier stage or an 'after' model")
    t.done()
    return out


def _mask(t: TomlTable) -> MaskSpec:
    out = MaskSpec(
        channel=t.int("channel", 1),
        threshold=t.num("threshold", 0.5),
        largest_component=t.bool("largest_component", False),
        connectivity=_connectivity(t),
        fill_holes=t.bool("fill_holes", False),
    )
    t.done()
    return out


def _connectivity(t: TomlTable) -> int:
    value = t.get("connectivity", 26)
    if value not in CONNECTIVITY or isinstance(value, bool):
        t.fail("connectivity", f"must be 6 (faces) or 26 (faces, edges, corners) (got {value!r})")
    return int(value)


def _labels_postprocess(t: TomlTable, sources: tuple[str, ...]) -> LabelsPostProcess:
    within = t.str("within", "", choices=sources) if sources else t.str("within", "")
    if within and not sources:
        t.fail("within", "needs an earlier stage or an 'after' model")
    out = LabelsPostProcess(
        largest_component=t.bool("largest_component", False),
        connectivity=_connectivity(t) if t.has("connectivity") else
        (t.seen.add("connectivity") or 6),
        fill_holes=t.bool("fill_holes", False),
        within=within,
    )
    t.done()
    return out


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


def _normalization(t: TomlTable, stages: tuple[str, ...]) -> Normalization:
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
    if kind == "robust_range":
        if not 0 <= params.get("f_low", 0.0) < params.get("f_high", 0.999) <= 1:
            t.fail("f_high", "fractions need 0 <= f_low < f_high <= 1")
        bins = params.get("bins", 1000)
        if bins < 2 or bins != int(bins):
            t.fail("bins", "must be an integer >= 2")
    if "min" in params and "max" in params and params["min"] >= params["max"]:
        t.fail("max", "must be greater than min")
    allowed = (*STATISTICS_FROM, *(f"stage:{name}" for name in stages))
    statistics = t.str("statistics", "crop", choices=allowed)
    then_raw = t.get("then", [])
    if not isinstance(then_raw, list):
        t.fail("then", "must be an array of normalisation tables")
    then = tuple(_normalization(t.child(v, f"{t.prefix}then[{i}]."), stages)
                 for i, v in enumerate(then_raw))
    t.done()
    return Normalization(kind, MappingProxyType(params), statistics, then)


def _input(t: TomlTable, stages: tuple[str, ...] = ()) -> InputSpec:
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
        _orientation(t, "orientation", orientation)
    raw_norm = t.raw.get("normalize", {"kind": "none"})
    t.seen.add("normalize")
    if isinstance(raw_norm, list):
        if not raw_norm:
            t.fail("normalize", "must hold at least one table")
        norms = tuple(
            _normalization(t.child(v, f"{t.prefix}normalize[{i}]."), stages)
            for i, v in enumerate(raw_norm)
        )
    else:
        norms = (_normalization(t.child(raw_norm, f"{t.prefix}normalize."), stages),)
    channels = t.int("channels", len(norms), low=1)
    if len(norms) not in (1, channels):
        t.fail("channels", f"is {channels} but {len(norms)} normalisations are given "
                           "(give one, copied to every channel, or one per channel)")
    resize = t.numbers("resize", 2 if layout in LAYOUTS_2D else 3, None, integer=True)
    fill_value = t.num("fill_value", None)
    conform = _conform(t.table("conform")) if t.has("conform") else None
    if conform is None:
        t.seen.add("conform")
    elif layout in LAYOUTS_2D:
        t.fail("conform", "a conformed grid is 3D; use a 3D layout")
    elif spacing is not None or orientation != "native" or resize is not None:
        t.fail("conform", "replaces spacing, orientation and resize; give none of them")
    out = InputSpec(
        name, layout, dtype, spacing, orientation, norms, channels, resize, fill_value, conform,
        resize_interpolation=t.str("resize_interpolation", "linear",
                                   choices=("linear", "nearest")),
        pad_multiple=t.int("pad_multiple", 1, low=1),
    )
    t.done()
    return out


def _orientation(t: TomlTable, key: str, code: str) -> None:
    from node.imaging.resample import _check_code

    try:
        _check_code(code)
    except ValueError as exc:
        t.fail(key, f"{exc}, or 'native'")


def _conform(t: TomlTable) -> Conform:
    orientation = t.str("orientation", "LIA")
    _orientation(t, "orientation", orientation)
    out = Conform(
        size=t.numbers("size", 3, (256, 256, 256), integer=True),
        spacing=t.numbers("spacing", 3, (1.0, 1.0, 1.0)),
        orientation=orientation.upper(),
        interpolation=t.str("interpolation", "linear", choices=("linear", "nearest", "inside")),
    )
    t.done()
    return out


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
        combine=t.str("combine", "mean", choices=SLICE_COMBINE),
        top_k=t.int("top_k", 1, low=1),
    )
    if out.top_k != 1 and out.combine != "top_k_mean":
        t.fail("top_k", "only with combine = 'top_k_mean'")
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
        if output.kind == "classification" or output.activation == "softmax" or (
                output.kind == "segmentation" and output.activation == "none"):
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
        split = None
        if t.has("split"):
            st = t.table("split")
            split = Split(st.int("left", low=1), st.int("right", low=1))
            st.done()
        else:
            t.seen.add("split")
        reported_value = t.int("reported_value", None, low=1)
        if reported_value is not None and split is not None:
            t.fail("reported_value", "a split label reports its left and right values")
        labels.append(LabelSpec(
            value=value,
            name=t.str("name"),
            channel=channel,
            category=_code(t, "category"),
            type=_code(t, "type"),
            colour=tuple(int(c) for c in colour),  # type: ignore[arg-type]
            postprocess=post,
            split=split,
            reported_value=reported_value,
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
        earlier = [other.value for other in labels[:i]]
        late = [v for v in lab.postprocess.keep_touching if v not in earlier]
        if late:
            top.fail(f"labels[{i}].postprocess.keep_touching", f"{late} must be labels declared "
                     "before this one (labels are cleaned in manifest order)")
    reported = [side.value for lab in labels for side in lab.sides()]
    for i, lab in enumerate(labels):
        if any(reported.count(side.value) > 1 for side in lab.sides()):
            key = "split" if lab.split else "reported_value" if lab.reported_value else "value"
            top.fail(f"labels[{i}].{key}", "each reported value must be its own (used by no "
                     "other label or side)")
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
        cut_pieces=t.num("cut_pieces", 0.0, low=0.0, high=1.0),
        keep_touching=t.ints("keep_touching", ()),
        absorb=t.ints("absorb", ()),
        fill_holes=fill,
    )
    removes = out.min_size_mm3 > 0 or out.largest_components > 0
    for key, used in (("cut_pieces", out.cut_pieces > 0), ("keep_touching", out.keep_touching)):
        if used and not removes:
            t.fail(key, "keeps components that min_size_mm3 or largest_components would remove; "
                   "give one of them")
    t.done()
    return out


def _totals(top: TomlTable, values: set[int], after: str) -> tuple[Total, ...]:
    out: list[Total] = []
    for i, t in enumerate(top.tables("totals")):
        name = t.str("name")
        from_after = t.bool("from_after", False)
        labels = t.ints("labels", (), nonempty=not from_after)
        if from_after and labels:
            t.fail("labels", "give labels or from_after = true, not both")
        if from_after and not after:
            t.fail("from_after", "needs 'after' (the model whose labels make this total)")
        unknown = [v for v in labels if v not in values]
        if unknown:
            t.fail("labels", f"{unknown} are not label values this model reports")
        if name in [o.name for o in out]:
            top.fail(f"totals[{i}].name", f"duplicate total {name!r}")
        out.append(Total(name, labels, from_after, _code(t, "type")))
        t.done()
    return tuple(out)


def _flags(top: TomlTable, stages: list[Stage], reported: list[int]) -> tuple[FlagSpec, ...]:
    """The ``[[flags]]``: masks the graph gives beside its labels. Only a one-stage
    segmentation run whole, without a crop or mirroring, fetches them: there the mask lies on
    the grid the labels are post-processed on, voxel for voxel."""
    tables = top.tables("flags")
    if not tables:
        return ()
    stage = stages[-1]
    if len(stages) > 1:
        top.fail("flags", f"only for a one-stage model (this one has {len(stages)} [[stages]])")
    if stage.output.kind != "segmentation":
        top.fail("flags", f"only for output.kind = 'segmentation' (got {stage.output.kind!r})")
    if stage.run.mode != "whole":
        top.fail("flags", f"only for run.mode = 'whole' (got {stage.run.mode!r})")
    if stage.crop is not None:
        top.fail("flags", "not with [crop]: the flag masks must cover the whole model grid")
    if stage.run.mirror_axes:
        top.fail("flags", "not with run.mirror_axes: a mask is not averaged over flips")
    out: list[FlagSpec] = []
    for i, t in enumerate(tables):
        output = t.str("output")
        if output == stage.output.name:
            t.fail("output", f"is the label output {output!r}; a flag needs its own output")
        labels = t.ints("labels", tuple(dict.fromkeys(reported)), nonempty=True)
        unknown = [v for v in labels if v not in reported]
        if unknown:
            t.fail("labels", f"{unknown} are not label values this model reports")
        flag = FlagSpec(output=output, name=t.str("name"), labels=labels,
                        concept=_code(t, "concept"))
        if flag.concept is not None and (len(flag.concept.value) > 16
                                         or len(flag.concept.scheme) > 16
                                         or len(flag.concept.meaning) > 64):
            t.fail("concept", "value and scheme take at most 16 characters, meaning 64")
        for other in out:
            if flag.output == other.output:
                top.fail(f"flags[{i}].output", f"output {output!r} is flagged twice")
            if flag.name == other.name:
                top.fail(f"flags[{i}].name", f"duplicate flag name {flag.name!r}")
            if flag.concept == other.concept:
                top.fail(f"flags[{i}].concept", "each flag needs its own concept (only one "
                         "may leave it out)" if flag.concept is None else "is used twice")
        out.append(flag)
        t.done()
    return tuple(out)


def _measurements(top: TomlTable, values: set[int], totals: set[str]
                  ) -> tuple[Mapping[str, Any], ...]:
    out = []
    for t in top.tables("measurements"):
        kind = t.str("kind")
        labels = t.ints("labels", ())
        unknown = [v for v in labels if v not in values]
        if unknown:
            t.fail("labels", f"{unknown} are not declared label values (a split label's are "
                   "its left and right values)")
        if kind == "volume_percent":
            of = t.str("of")
            if of not in totals:
                t.fail("of", f"must name one of the [[totals]] (got {of!r})")
        out.append(MappingProxyType(dict(t.raw)))  # the measure step reads the rest
    return tuple(out)
