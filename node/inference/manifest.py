"""A model package's ``model.toml``, read into frozen dataclasses; every error names its key.

The dataclasses below are the manifest's schema: each field's type, default, allowed values (a
``StrEnum``) and documentation are written once, in the field and its ``key_doc`` metadata.
``node.toml_table.read_fields`` reads the keys by it; the rules that tie keys together (a
default or choice that depends on another key, a label's ``keep_touching`` naming earlier
labels, flags only for one-stage models run whole) are checked explicitly after it. The key
tables of ``models/README.md`` are generated from the schema (``radnode models reference``).
``node.inference.check`` also checks a manifest against its ONNX graphs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from node.errors import NodeError
from node.toml_table import (
    TomlTable,
    default_of,
    key_doc,
    read_fields,
    read_toml,
)


class Layout(StrEnum):
    """Tensor layout of a stage's input: 3D volumes or 2D slices (run slice-wise)."""

    NCDHW = "NCDHW"
    NDHWC = "NDHWC"
    NCHW = "NCHW"
    NHWC = "NHWC"


class DType(StrEnum):
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    INT16 = "int16"
    UINT8 = "uint8"
    INT32 = "int32"
    INT64 = "int64"


class NormalizationKind(StrEnum):
    NONE = "none"
    WINDOW = "window"
    ZSCORE = "zscore"
    PERCENTILE = "percentile"
    SCALE = "scale"
    MINMAX = "minmax"
    ROBUST_RANGE = "robust_range"


class StatisticsFrom(StrEnum):
    """Where a normalisation takes its statistics; ``stage:<name>`` (an earlier stage's input)
    is allowed besides these."""

    CROP = "crop"
    GRID = "grid"
    SOURCE = "source"


class Interpolation(StrEnum):
    LINEAR = "linear"
    NEAREST = "nearest"
    INSIDE = "inside"  # trilinear inside the source, 0 outside (the conformed grid)


class RunMode(StrEnum):
    WHOLE = "whole"
    SLICEWISE = "slicewise"
    SLIDING_WINDOW = "sliding_window"


class Combine(StrEnum):
    """How slice-wise classification makes the series' probabilities from the slices'."""

    MEAN = "mean"
    MAX = "max"
    TOP_K_MEAN = "top_k_mean"


class OutputKind(StrEnum):
    SEGMENTATION = "segmentation"
    DETECTION = "detection"
    CLASSIFICATION = "classification"


class Activation(StrEnum):
    SOFTMAX = "softmax"
    SIGMOID = "sigmoid"
    LABELMAP = "labelmap"
    NONE = "none"


class OutputFormat(StrEnum):
    HEATMAP = "heatmap"
    BOXES = "boxes"


class MapBack(StrEnum):
    NEAREST = "nearest"
    LABEL_LINEAR = "label_linear"


class FillHoles(StrEnum):
    """A label's hole filling; TOML may also say ``true`` (3d) or ``false`` (none)."""

    NONE = "none"
    D3 = "3d"
    AXIAL = "axial"


LAYOUTS_2D = (Layout.NCHW, Layout.NHWC)
# Each normalisation kind's (required, optional) keys.
NORMALIZATIONS: Mapping[NormalizationKind, tuple[tuple[str, ...], tuple[str, ...]]] = {
    NormalizationKind.NONE: ((), ()),
    NormalizationKind.WINDOW: (("center", "width"), ()),
    NormalizationKind.ZSCORE: ((), ("min", "max", "mean", "std", "ddof")),
    NormalizationKind.PERCENTILE: (("low", "high"), ()),
    NormalizationKind.SCALE: ((), ("factor", "offset")),
    NormalizationKind.MINMAX: ((), ()),
    NormalizationKind.ROBUST_RANGE: ((), ("f_low", "f_high", "bins", "out_max")),
}
CONNECTIVITY = (6, 26)
# The activations each output kind allows; the first is its default.
ACTIVATIONS: Mapping[OutputKind, tuple[Activation, ...]] = {
    OutputKind.SEGMENTATION: (Activation.SOFTMAX, Activation.SIGMOID, Activation.LABELMAP,
                              Activation.NONE),
    OutputKind.DETECTION: (Activation.SIGMOID, Activation.NONE),
    OutputKind.CLASSIFICATION: (Activation.SOFTMAX, Activation.SIGMOID, Activation.NONE),
}
THRESHOLD = "threshold"  # crop.source: an intensity threshold, not a mask
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _name(value: str) -> str | None:
    return None if _NAME.fullmatch(value) else "letters, digits, '_', '.', '-' only"


class ManifestError(NodeError, ValueError):
    """A manifest problem; the message starts with the file and the offending key."""


@dataclass(frozen=True)
class Code:
    """A coded concept, e.g. SNOMED CT ``("10200004", "SCT", "Liver")``."""

    value: str = field(metadata=key_doc("the code value, e.g. `44029006`"))
    scheme: str = field(default="SCT", metadata=key_doc("coding scheme designator"))
    meaning: str = field(default="", metadata=key_doc("code meaning, e.g. `Left lung`",
                                                      required=True))


@dataclass(frozen=True)
class Accepts:
    """Which series a model can read; the router ANDs this with its own rules."""

    modalities: tuple[str, ...] = field(metadata=key_doc(
        'e.g. `["CT"]`; at least one', key="modality"))
    min_slices: int = field(default=1, metadata=key_doc("instances the series needs", low=1))
    body_parts: tuple[str, ...] = field(default=(), metadata=key_doc(
        "BodyPartExamined, compared upper-case", key="body_part", default_doc="any"))
    max_slice_thickness: float | None = field(default=None, metadata=key_doc(
        "SliceThickness in mm, when the header has it", positive=True))

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

    kind: NormalizationKind = field(default=NormalizationKind.NONE, metadata=key_doc(
        "the normalisation (its keys in the table below)", required=True))
    params: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({}),
        metadata=key_doc("the kind's keys (below), e.g. `center` and `width` of a window",
                         manual=True, key="(kind's keys)", type_doc="numbers",
                         default_doc="per kind"))
    statistics: str = field(default=StatisticsFrom.CROP, metadata=key_doc(
        "where its statistics (percentiles, mean and std, min and max, range) come from: "
        '`"crop"` (what the network sees), `"grid"` (the stage\'s whole grid before the crop), '
        '`"source"` (the series as received), or `"stage:<name>"` (an earlier stage\'s input). '
        "Steps in `then` always use the channel as it is at that step", manual=True,
        type_doc='`"crop"`, `"grid"`, `"source"`, `"stage:<name>"`'))
    then: tuple[Normalization, ...] = field(default=(), metadata=key_doc(
        "further normalisation tables applied after it, in order (deepbet: percentile clip, "
        "z-score, then `* 0.226 + 0.449`)", manual=True))


@dataclass(frozen=True)
class Conform:
    """A fixed grid, as FreeSurfer conforms a T1: ``size`` voxels (i, j, k) of ``spacing`` mm in
    ``orientation``, centred on the centre of the source's field of view."""

    size: tuple[int, int, int] = field(default=(256, 256, 256), metadata=key_doc(
        "voxels along i, j, k"))
    spacing: tuple[float, float, float] = field(default=(1.0, 1.0, 1.0), metadata=key_doc(
        "mm along i, j, k"))
    orientation: str = field(default="LIA", metadata=key_doc(
        "three letters, the grid's axes exactly (an oblique series is resampled onto them)",
        type_doc="three letters"))
    interpolation: Interpolation = field(default=Interpolation.LINEAR, metadata=key_doc(
        "`inside`: trilinear inside the source, 0 outside (as niivue conforms)",
        choices=("linear", "nearest", "inside")))


@dataclass(frozen=True)
class CropSpec:
    """A box cut from the stage's grid before normalisation, pasted back after inference.

    ``source`` is ``"threshold"`` (voxels above ``fraction`` of the intensity range) or the name
    of an earlier stage or prerequisite model whose mask gives the box. A plane belongs to the
    box when more than ``min_plane_fraction`` of its voxels are in it. The box grows by
    ``margin`` voxels and ``margin_fraction`` of its size on each side; with ``resize`` the crop
    is resampled to that shape (D, H, W) and its outputs back.
    """

    source: str = field(metadata=key_doc(
        "where the box comes from: an intensity threshold or that mask", manual=True,
        type_doc="`\"threshold\"`, an earlier stage's name, or the `after` model's name"))
    fraction: float = field(default=0.0, metadata=key_doc(
        "with `threshold`: voxels above `min + fraction * (max - min)` of the stage's grid",
        low=0.0, high=1.0, default_doc="required with `threshold`"))
    min_plane_fraction: float = field(default=0.0, metadata=key_doc(
        "a plane belongs to the box when more than this fraction of its voxels is in the mask "
        "(deepbet: 0.02)", low=0.0, high=1.0))
    margin: int = field(default=0, metadata=key_doc("voxels added on each side"))
    margin_fraction: float = field(default=0.0, metadata=key_doc(
        "fraction of the box size added on each side (deepbet: 0.1)", low=0.0, high=10.0))
    resize: tuple[int, int, int] | None = field(default=None, metadata=key_doc(
        "the crop is resized to this shape for the network and its output back to the crop",
        type_doc="3 positive ints `(D, H, W)`"))
    interpolation: Interpolation = field(default=Interpolation.NEAREST, metadata=key_doc(
        "for `resize`", choices=("nearest", "linear")))
    within: str = field(default="", metadata=key_doc(
        "the box stays inside this mask's box", manual=True,
        type_doc="an earlier stage or the `after` model"))
    within_margin: int = field(default=0, metadata=key_doc("voxels around that box"))


@dataclass(frozen=True)
class MaskSpec:
    """How an earlier stage's output becomes the mask later stages read."""

    channel: int = field(default=1, metadata=key_doc(
        "the output channel read (after the activation)"))
    threshold: float = field(default=0.5, metadata=key_doc(
        "a voxel is in the mask where the channel is above it"))
    largest_component: bool = field(default=False, metadata=key_doc(
        "keep only the largest connected component"))
    connectivity: int = field(default=26, metadata=key_doc(
        "faces only, or faces, edges and corners", manual=True, type_doc="6 or 26"))
    fill_holes: bool = field(default=False, metadata=key_doc(
        "enclosed background joins the mask"))


@dataclass(frozen=True)
class InputSpec:
    name: str = field(metadata=key_doc("the graph input fed"))
    layout: Layout = field(default=Layout.NCDHW, metadata=key_doc(
        "`NCDHW`, `NDHWC`: 3D; `NCHW`, `NHWC`: 2D, run slice by slice", required=True))
    dtype: DType = field(default=DType.FLOAT32, metadata=key_doc("checked against the graph"))
    # (i, j, k) mm; None = native
    spacing: tuple[float, float, float] | None = field(default=None, metadata=key_doc(
        "**(i, j, k) order** = (column, row, slice) in mm; resampled linearly", manual=True,
        type_doc='3 positive numbers, or `"native"`', default_doc="native"))
    orientation: str = field(default="native", metadata=key_doc(
        'three letters, DICOM sense (`"LPS"`: i towards patient Left, j Posterior, k Superior; '
        '`"RAS"`, ...): an exact permutation/flip of the voxel axes, no interpolation; an '
        "oblique series stays oblique (its axes go to the closest match)",
        type_doc='three letters, or `"native"`'))
    normalize: tuple[Normalization, ...] = field(default=(Normalization(),), metadata=key_doc(
        "one normalisation per channel (below)", manual=True,
        type_doc="a table, or an array of tables", default_doc='`{ kind = "none" }`'))
    channels: int = field(default=1, metadata=key_doc(
        "one normalisation with `channels = 3` copies it into 3 channels", manual=True,
        type_doc="int >= 1", default_doc="number of normalisations"))
    # Fixed size the grid is resampled to, array order: (H, W) for 2D layouts, (D, H, W) for 3D.
    resize: tuple[int, ...] | None = field(default=None, metadata=key_doc(
        "fixed size, **array order**; the field of view is kept (spacing changes)", manual=True,
        type_doc="2 positive ints `(H, W)` (2D layouts), 3 `(D, H, W)` (3D)"))
    fill_value: float | None = field(default=None, metadata=key_doc(
        "value outside the source when resampling",
        default_doc="the volume's minimum (0 with `conform`)"))
    conform: Conform | None = field(default=None, metadata=key_doc(
        "a fixed grid as FreeSurfer conforms (below); excludes `spacing`, `orientation`, "
        "`resize`", manual=True))
    resize_interpolation: Interpolation = field(default=Interpolation.LINEAR, metadata=key_doc(
        "how `resize` samples; `nearest` uses PyTorch's `nearest-exact` index arithmetic "
        "exactly", choices=("linear", "nearest")))
    pad_multiple: int = field(default=1, metadata=key_doc(
        "each spatial size of the tensor padded (at the end, with its minimum) up to a multiple "
        "of this, cut off again after the run", low=1))

    @property
    def is_2d(self) -> bool:
        return self.layout in LAYOUTS_2D


@dataclass(frozen=True)
class RunSpec:
    mode: RunMode = field(default=RunMode.WHOLE, metadata=key_doc(
        "the whole volume, slice by slice, or by sliding window", manual=True,
        type_doc='`"whole"`, `"sliding_window"` (3D layouts); `"slicewise"` (2D layouts)',
        default_doc='`"whole"` (3D), `"slicewise"` (2D)'))
    batch_size: int = field(default=1, metadata=key_doc(
        "slices per call (slicewise) or patches per call (sliding window)", low=1))
    patch_size: tuple[int, int, int] | None = field(default=None, metadata=key_doc(
        "sliding window: the patch, array order; the volume is padded when smaller",
        type_doc="3 positive ints `(D, H, W)`", default_doc="required for sliding window"))
    overlap: float = field(default=0.5, metadata=key_doc(
        "fraction of the patch shared by neighbours", low=0.0, high=0.9))
    gaussian_sigma: float = field(default=0.125, metadata=key_doc(
        "blending weight: a Gaussian with sigma = this x patch size; 0 = flat", low=0.0,
        high=10.0))
    mirror_axes: tuple[int, ...] = field(default=(), metadata=key_doc(
        "test-time augmentation: raw outputs averaged over every combination of flips; not with "
        "a `labelmap` or `boxes` output", manual=True,
        type_doc="list of spatial axes, 0 = D (slices), 1 = H (rows), 2 = W (columns); 2D: 1, 2"))
    combine: Combine = field(default=Combine.MEAN, metadata=key_doc(
        "slice-wise classification: how the slices' probabilities make the series' (the "
        "per-slice probabilities are in the result too)"))
    top_k: int = field(default=1, metadata=key_doc(
        "with `top_k_mean`: the mean of the k highest slices", low=1))


@dataclass(frozen=True)
class OutputSpec:
    name: str = field(metadata=key_doc("the graph output read"))
    kind: OutputKind = field(default=OutputKind.SEGMENTATION, metadata=key_doc(
        "what the output is", required=True))
    activation: Activation = field(default=Activation.SOFTMAX, metadata=key_doc(
        "segmentation: `softmax`, `sigmoid`, `labelmap`, `none` (the graph already ends in a "
        "softmax: argmax as softmax); detection: `sigmoid`, `none`; classification: `softmax`, "
        "`sigmoid`, `none`", manual=True, type_doc="by kind (see meaning)",
        default_doc="`softmax` / `sigmoid` / `softmax`"))
    dtype: DType = field(default=DType.FLOAT32, metadata=key_doc("checked against the graph"))
    format: OutputFormat = field(default=OutputFormat.HEATMAP, metadata=key_doc(
        "detection: a heat map, or box rows (`boxes`: whole mode only, no mirroring)"))
    threshold: float = field(default=0.5, metadata=key_doc(
        "sigmoid / heat-map threshold; minimum box score"))
    map_back: MapBack = field(default=MapBack.LABEL_LINEAR, metadata=key_doc(
        "how the label map goes back to the source grid"))


@dataclass(frozen=True)
class PostProcess:
    threshold: float | None = field(default=None, metadata=key_doc(
        "minimum probability (see decoding)", low=0.0, high=1.0))
    min_size_mm3: float = field(default=0.0, metadata=key_doc(
        "connected components smaller than this are removed (set to 0)", low=0.0))
    largest_components: int = field(default=0, metadata=key_doc(
        "keep only the n largest components (0 = all)"))
    # components touching the edge of the volume (pieces of an organ the field of view cut
    # apart) stay when at least this share of the largest
    cut_pieces: float = field(default=0.0, metadata=key_doc(
        "with `min_size_mm3` or `largest_components`: components they would remove that touch a "
        "face of the volume and hold at least this fraction of the voxels kept stay. A connected "
        "organ shows as several pieces only where the field of view cuts it, and each piece then "
        "reaches the edge of the images; false positives inside the volume still go",
        low=0.0, high=1.0))
    # components touching these labels (cleaned before this one) stay, whatever their size
    keep_touching: tuple[int, ...] = field(default=(), metadata=key_doc(
        "with `min_size_mm3` or `largest_components`: components that share a face with these "
        "labels (declared, and cleaned, before this one) are kept whatever their size: the "
        "pieces of the body a lung cuts off at the border of the image",
        type_doc="list of label values"))
    absorb: tuple[int, ...] = field(default=(), metadata=key_doc(
        "voxels with these values connected to the kept label join it (region growing; the "
        "values need not be declared labels)", type_doc="list of raw output values"))
    fill_holes: FillHoles = field(default=FillHoles.NONE, metadata=key_doc(
        "enclosed voxels that are background or undeclared values join the label: in 3D, or "
        "slice by slice (`axial`)", manual=True,
        type_doc='`true`/`"3d"`, `"axial"`, `false`/`"none"`'))


@dataclass(frozen=True)
class Split:
    """A paired structure the network does not lateralise: the label values its left and right
    parts get, on either side of the brain's mid-sagittal plane."""

    left: int = field(metadata=key_doc("value of the part on the patient's left", low=1))
    right: int = field(metadata=key_doc("value of the part on the patient's right", low=1))


LEFT = Code("7771000", "SCT", "Left")
RIGHT = Code("24028007", "SCT", "Right")


@dataclass(frozen=True)
class LabelSpec:
    value: int = field(metadata=key_doc(
        "the value in the label map (>= 1; classification: the class index, >= 0)",
        manual=True, type_doc="int"))
    name: str = field(metadata=key_doc("segment label / class name"))
    channel: int | None = field(metadata=key_doc(
        "output channel holding this label", manual=True, type_doc="int >= 0",
        default_doc="softmax, classification, and segmentation with `none`: `value`; "
                    "sigmoid and detection: `value - 1`; labelmap: none"))
    category: Code | None = field(default=None, metadata=key_doc(
        "SNOMED CT segmented property category (e.g. 91723000 Anatomical Structure)",
        type_doc='code `{ value, scheme = "SCT", meaning }`'))
    type: Code | None = field(default=None, metadata=key_doc(
        "SNOMED CT segmented property type (e.g. 44029006 Left lung)",
        type_doc='code `{ value, scheme = "SCT", meaning }`'))
    colour: tuple[int, int, int] = field(default=(255, 0, 0), metadata=key_doc(
        "display colour (SEG recommended display)", manual=True, type_doc="3 ints 0\u2013255"))
    postprocess: PostProcess = field(default=PostProcess(), metadata=key_doc(
        "this label's post-processing (below)", manual=True, default_doc="nothing"))
    # SNOMED CT Left / Right, for a split label
    laterality: Code | None = field(default=None, metadata=key_doc("", internal=True))
    split: Split | None = field(default=None, metadata=key_doc(
        "a paired structure the network does not lateralise: its voxels get the `left` or "
        "`right` value by the side of the brain's mid-sagittal plane they lie on; reported as "
        '"Left <name>" / "Right <name>" with the SNOMED CT laterality 7771000 Left / 24028007 '
        "Right (in the SEG and as the SR's finding site modifier)",
        type_doc="`{ left, right }`"))
    # the value written for it, when not ``value``
    reported_value: int | None = field(default=None, metadata=key_doc(
        "the value written for this label when it differs from the network's (e.g. "
        "FreeSurfer's 14 for the third ventricle); not with `split`", low=1,
        default_doc="`value`"))

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

    # (in the order the steps run)
    within: str = field(default="", metadata=key_doc(
        "labels outside its mask become background", manual=True,
        type_doc="an earlier stage or the `after` model"))
    largest_component: bool = field(default=False, metadata=key_doc(
        "keep only the largest connected component of the union of labels"))
    connectivity: int = field(default=6, metadata=key_doc(
        "of that component: faces only, or faces, edges and corners", manual=True,
        type_doc="6 or 26"))
    fill_holes: bool = field(default=False, metadata=key_doc(
        "enclosed background (face-connected) joins the first label"))


@dataclass(frozen=True)
class Total:
    """A region reported beside the labels: the union of some labels (total brain volume), or
    of the labels of the model this one ran after (intracranial volume from the brain mask)."""

    name: str = field(metadata=key_doc('e.g. "Intracranial volume"'))
    labels: tuple[int, ...] = field(default=(), metadata=key_doc(
        "the union of these labels (e.g. total brain: every structure but the ventricles); "
        "required unless `from_after`", manual=True, type_doc="list of reported label values"))
    from_after: bool = field(default=False, metadata=key_doc(
        "the union of the labels of the `after` model (e.g. the brain mask)"))
    type: Code | None = field(default=None, metadata=key_doc(
        "what it is (SNOMED CT), for the SR", type_doc="code"))


@dataclass(frozen=True)
class FlagSpec:
    """A flag the model raises itself: a second graph output, a per-voxel mask (the shape of
    the label output) of the voxels whose label it could not decide. A listed label whose final
    voxels overlap the mask is flagged, in the job's result and as a qualitative evaluation in
    its SR group, so that a volume the model is unsure of is never reported as if it were sure.
    """

    output: str = field(metadata=key_doc(
        "the graph output holding the mask (non-zero: undecided), other than `output.name`; "
        "`radnode models check` checks that it exists and is a one-channel mask of the input's "
        "rank"))
    name: str = field(metadata=key_doc(
        'shown in the result and the SR, e.g. "Undecided field of view"; unique among the '
        "flags"))
    labels: tuple[int, ...] = field(metadata=key_doc(
        "the labels that can be flagged; a split label's left and right values", manual=True,
        type_doc="list of reported label values", default_doc="every label"))
    concept: Code | None = field(default=None, metadata=key_doc(
        'the value of the SR\'s qualitative evaluation "Quality Finding" (DCM 111052); default '
        'the node\'s local code 99RADNODE `UNDECIDED` "Region partly undecided by the '
        'algorithm". Two flags cannot share one (so at most one leaves it out). A local scheme '
        "(`99...`) other than 99RADNODE must be declared in the SR template's `[coding_schemes]`",
        type_doc="code", default_doc="the node's"))


@dataclass(frozen=True)
class Stage:
    """One network of a package: its ONNX file, grid, crop, intensities, run and output.

    The last stage makes the labels; an earlier one makes a mask (``mask``) that later stages
    may crop to, take statistics from, or keep their labels within.
    """

    name: str = field(metadata=key_doc(
        "the stage's name: later stages use it in `crop.source`, `statistics = "
        '"stage:<name>"` and `postprocess.within`', check=_name,
        default_doc="required (one stage: the model's)"))
    file: str = field(metadata=key_doc(
        "its ONNX file in the package folder", default_doc="required (one stage: `model.onnx`)"))
    input: InputSpec = field(metadata=key_doc("the grid and intensities", manual=True))
    run: RunSpec = field(metadata=key_doc("how the session runs", manual=True,
                                          default_doc="all defaults"))
    output: OutputSpec = field(metadata=key_doc("what comes out and how it is decoded",
                                                manual=True))
    crop: CropSpec | None = field(default=None, metadata=key_doc(
        "the box the stage runs on", manual=True))
    mask: MaskSpec | None = field(default=None, metadata=key_doc(
        "every stage but the last: how its output becomes a mask", manual=True,
        default_doc="all defaults (earlier stages)"))


@dataclass(frozen=True)
class Manifest:
    name: str = field(metadata=key_doc(
        "`[A-Za-z0-9_.-]+`, equal to the folder name; routes name it", check=_name))
    version: str = field(metadata=key_doc(
        "part of the output UIDs and of the SEG/SR algorithm identification"))
    description: str = field(metadata=key_doc("what the model is, honestly (method, limits)"))
    licence: str = field(metadata=key_doc("of the weights / the package"))
    intended_use: str = field(metadata=key_doc("what it is for, and not for"))
    for_clinical_use: bool = field(metadata=key_doc(
        "`false` marks research / demonstration models"))
    accepts: Accepts = field(metadata=key_doc("which series the model can read", manual=True))
    stages: tuple[Stage, ...] = field(metadata=key_doc(
        "several networks in one package; without it, one stage from the top-level `[input]`, "
        "`[crop]`, `[run]`, `[output]`", manual=True, default_doc="one stage"))
    labels: tuple[LabelSpec, ...] = field(metadata=key_doc(
        "the labels, in order; at least one", manual=True))
    sr_template: str = field(default="", metadata=key_doc(
        "name of the SR template under `sr_templates/`"))
    measurements: tuple[Mapping[str, Any], ...] = field(default=(), metadata=key_doc(
        "passed to the measurement step (below)", manual=True, type_doc="array of tables"))
    path: Path = field(default=Path("model.toml"), metadata=key_doc("", internal=True))
    # a model run first on the same volume (its mask may crop or bound this one)
    after: str = field(default="", metadata=key_doc(
        "a model package (in the same folder) run first on the same volume; its mask can crop "
        "this one (`crop.source`), bound its labels (`postprocess.within`) and make a total "
        "(`[[totals]]` with `from_after`)", manual=True,
        type_doc="the name of another model package"))
    postprocess: LabelsPostProcess = field(default=LabelsPostProcess(), metadata=key_doc(
        "steps on the union of all labels (below)", manual=True, default_doc="nothing"))
    totals: tuple[Total, ...] = field(default=(), metadata=key_doc(
        "regions reported beside the labels (below)", manual=True))
    flags: tuple[FlagSpec, ...] = field(default=(), metadata=key_doc(
        "labels the model could not decide (below)", manual=True))

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


# The tables of models/README.md, by the name its markers give them.
REFERENCE_TABLES: Mapping[str, type] = {
    "top level": Manifest, "accepts": Accepts, "stages": Stage, "stages.mask": MaskSpec,
    "input": InputSpec, "input.conform": Conform, "input.normalize": Normalization,
    "crop": CropSpec, "run": RunSpec, "output": OutputSpec, "labels": LabelSpec,
    "code": Code, "labels.split": Split, "labels.postprocess": PostProcess,
    "postprocess": LabelsPostProcess, "totals": Total, "flags": FlagSpec,
}


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
    values = read_fields(Manifest, top)
    name = values["name"]
    after = top.str("after", default_of(Manifest, "after"),
                    check=lambda v: None if _NAME.fullmatch(v) and v != name else
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
            head = read_fields(Stage, t)
            stages.append(_stage(t, head["name"], head["file"], stages, after,
                                 final=i == len(tables) - 1))
            t.done()
    else:
        stages = [_stage(top, name, "model.onnx", [], after, final=True)]
    names = [st.name for st in stages]
    for i, st in enumerate(stages):
        if st.name in names[:i] or st.name == after:
            top.fail(f"stages[{i}].name", f"duplicate stage name {st.name!r}")
    output, run = stages[-1].output, stages[-1].run
    labels = _labels(top, output)
    if run.combine != Combine.MEAN and not (output.kind == OutputKind.CLASSIFICATION
                                            and run.mode == RunMode.SLICEWISE):
        top.fail("run.combine", "only for slice-wise classification")
    postprocess = _labels_postprocess(top.table("postprocess", {}), _sources(stages[:-1], after))
    reported = [side.value for lab in labels for side in lab.sides()]
    totals = _totals(top, set(reported), after)
    measurements = _measurements(top, set(reported), {t.name for t in totals})
    flags = _flags(top, stages, reported)
    top.done()
    return Manifest(
        **values, accepts=accepts, stages=tuple(stages), labels=labels,
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
    if run.mirror_axes and (output.activation == Activation.LABELMAP
                            or output.format == OutputFormat.BOXES):
        t.fail("run.mirror_axes", "mirroring averages scores; not possible with "
               f"{'boxes' if output.format == OutputFormat.BOXES else 'a label-map output'}")
    if output.format == OutputFormat.BOXES and run.mode != RunMode.WHOLE:
        t.fail("run.mode", "box outputs need mode = 'whole'")
    crop = _crop(t.table("crop"), sources, input_spec) if t.has("crop") else None
    if crop is None:
        t.seen.add("crop")
    mask = None
    if not final:
        if output.kind != OutputKind.SEGMENTATION:
            t.fail("output.kind", "an earlier stage makes a mask: kind = 'segmentation'")
        mask = _mask(t.table("mask", {}))
    elif t.has("mask"):
        t.fail("mask", "only for earlier stages (the last stage's labels are [[labels]])")
    return Stage(name, file, input_spec, run, output, crop, mask)


def _within(t: TomlTable, cls: type, sources: tuple[str, ...]) -> str:
    """A ``within`` key: an earlier stage's or the prerequisite model's name."""
    default = default_of(cls, "within")
    within: str = (t.str("within", default, choices=sources) if sources
                   else t.str("within", default))
    if within and not sources:
        t.fail("within", "needs an earlier stage or an 'after' model")
    return within


def _crop(t: TomlTable, sources: tuple[str, ...], spec: InputSpec) -> CropSpec:
    source = t.str("source", choices=(THRESHOLD, *sources))
    values = read_fields(CropSpec, t)
    if source == THRESHOLD and not t.has("fraction"):
        t.fail("fraction", "is required with source = 'threshold'")
    if values["resize"] is not None and spec.is_2d:
        t.fail("resize", "crops of 2D layouts are not resized")
    out = CropSpec(source=source, within=_within(t, CropSpec, sources), **values)
    t.done()
    return out


def _mask(t: TomlTable) -> MaskSpec:
    out = MaskSpec(connectivity=_connectivity(t, MaskSpec), **read_fields(MaskSpec, t))
    t.done()
    return out


def _connectivity(t: TomlTable, cls: type) -> int:
    value = t.get("connectivity", default_of(cls, "connectivity"))
    if value not in CONNECTIVITY or isinstance(value, bool):
        t.fail("connectivity", f"must be 6 (faces) or 26 (faces, edges, corners) (got {value!r})")
    return int(value)


def _labels_postprocess(t: TomlTable, sources: tuple[str, ...]) -> LabelsPostProcess:
    within = _within(t, LabelsPostProcess, sources)
    out = LabelsPostProcess(within=within, connectivity=_connectivity(t, LabelsPostProcess),
                            **read_fields(LabelsPostProcess, t))
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
    values = read_fields(Accepts, t)
    if not values["modalities"]:
        t.fail("modality", "must name at least one modality")
    out = replace(Accepts(**values),
                  modalities=tuple(m.upper() for m in values["modalities"]),
                  body_parts=tuple(b.upper() for b in values["body_parts"]))
    t.done()
    return out


def _normalization(t: TomlTable, stages: tuple[str, ...]) -> Normalization:
    kind = read_fields(Normalization, t)["kind"]
    required, optional = NORMALIZATIONS[kind]
    params = {k: t.num(k) for k in required}
    params.update({k: t.num(k) for k in optional if t.has(k)})
    if kind == NormalizationKind.WINDOW and params["width"] <= 0:
        t.fail("width", "must be greater than 0")
    if kind == NormalizationKind.PERCENTILE and not 0 <= params["low"] < params["high"] <= 100:
        t.fail("high", "percentiles need 0 <= low < high <= 100")
    if kind == NormalizationKind.ZSCORE and params.get("std", 1.0) <= 0:
        t.fail("std", "must be greater than 0")
    if kind == NormalizationKind.ROBUST_RANGE:
        if not 0 <= params.get("f_low", 0.0) < params.get("f_high", 0.999) <= 1:
            t.fail("f_high", "fractions need 0 <= f_low < f_high <= 1")
        bins = params.get("bins", 1000)
        if bins < 2 or bins != int(bins):
            t.fail("bins", "must be an integer >= 2")
    if "min" in params and "max" in params and params["min"] >= params["max"]:
        t.fail("max", "must be greater than min")
    allowed = (*StatisticsFrom, *(f"stage:{name}" for name in stages))
    statistics = t.str("statistics", default_of(Normalization, "statistics"), choices=allowed)
    if statistics in tuple(StatisticsFrom):
        statistics = StatisticsFrom(statistics)
    then_raw = t.get("then", default_of(Normalization, "then"))
    if not isinstance(then_raw, list | tuple):
        t.fail("then", "must be an array of normalisation tables")
    then = tuple(_normalization(t.child(v, f"{t.prefix}then[{i}]."), stages)
                 for i, v in enumerate(then_raw))
    t.done()
    return Normalization(kind, MappingProxyType(params), statistics, then)


def _input(t: TomlTable, stages: tuple[str, ...] = ()) -> InputSpec:
    values = read_fields(InputSpec, t)
    layout: Layout = values["layout"]
    spacing = None
    if t.has("spacing") and t.raw["spacing"] != "native":
        spacing = t.numbers("spacing", 3)
    else:
        t.seen.add("spacing")
    orientation = values["orientation"]
    if orientation != "native":
        _orientation(t, "orientation", orientation)
    t.seen.add("normalize")
    if not t.has("normalize"):
        norms = default_of(InputSpec, "normalize")
    elif isinstance(t.raw["normalize"], list):
        if not t.raw["normalize"]:
            t.fail("normalize", "must hold at least one table")
        norms = tuple(
            _normalization(t.child(v, f"{t.prefix}normalize[{i}]."), stages)
            for i, v in enumerate(t.raw["normalize"])
        )
    else:
        norms = (_normalization(t.child(t.raw["normalize"], f"{t.prefix}normalize."), stages),)
    channels = t.int("channels", len(norms), low=1)
    if len(norms) not in (1, channels):
        t.fail("channels", f"is {channels} but {len(norms)} normalisations are given "
                           "(give one, copied to every channel, or one per channel)")
    resize = t.numbers("resize", 2 if layout in LAYOUTS_2D else 3, None, integer=True)
    conform = _conform(t.table("conform")) if t.has("conform") else None
    if conform is None:
        t.seen.add("conform")
    elif layout in LAYOUTS_2D:
        t.fail("conform", "a conformed grid is 3D; use a 3D layout")
    elif spacing is not None or orientation != "native" or resize is not None:
        t.fail("conform", "replaces spacing, orientation and resize; give none of them")
    out = InputSpec(spacing=spacing, normalize=norms, channels=channels, resize=resize,
                    conform=conform, **values)
    t.done()
    return out


def _orientation(t: TomlTable, key: str, code: str) -> None:
    from node.imaging.resample import _check_code

    try:
        _check_code(code)
    except ValueError as exc:
        t.fail(key, f"{exc}, or 'native'")


def _conform(t: TomlTable) -> Conform:
    values = read_fields(Conform, t)
    _orientation(t, "orientation", values["orientation"])
    out = replace(Conform(**values), orientation=values["orientation"].upper())
    t.done()
    return out


def _run(t: TomlTable, spec: InputSpec) -> RunSpec:
    modes = (RunMode.SLICEWISE,) if spec.is_2d else (RunMode.WHOLE, RunMode.SLIDING_WINDOW)
    mode = RunMode(t.str("mode", modes[0], choices=modes))
    values = read_fields(RunSpec, t)
    patch = values["patch_size"]
    if mode == RunMode.SLIDING_WINDOW and patch is None:
        t.fail("patch_size", "is required for mode = 'sliding_window' (3 integers D, H, W)")
    if mode != RunMode.SLIDING_WINDOW and patch is not None:
        t.fail("patch_size", "only for mode = 'sliding_window'")
    axes = (1, 2) if spec.is_2d else (0, 1, 2)
    if mode == RunMode.SLIDING_WINDOW and spec.resize is not None:
        t.fail("mode", "sliding_window and input.resize exclude each other")
    out = RunSpec(mode=mode, mirror_axes=t.ints("mirror_axes", default_of(RunSpec, "mirror_axes"),
                                                allowed=axes), **values)
    if out.top_k != 1 and out.combine != Combine.TOP_K_MEAN:
        t.fail("top_k", "only with combine = 'top_k_mean'")
    t.done()
    return out


def _output(t: TomlTable) -> OutputSpec:
    values = read_fields(OutputSpec, t)
    kind: OutputKind = values["kind"]
    if values["format"] == OutputFormat.BOXES and kind != OutputKind.DETECTION:
        t.fail("format", "'boxes' is for kind = 'detection'")
    allowed = ACTIVATIONS[kind]
    out = OutputSpec(activation=Activation(t.str("activation", allowed[0], choices=allowed)),
                     **values)
    t.done()
    return out


def _labels(top: TomlTable, output: OutputSpec) -> tuple[LabelSpec, ...]:
    tables = top.tables("labels")
    if not tables:
        top.fail("labels", "at least one [[labels]] entry is required")
    labels: list[LabelSpec] = []
    for t in tables:
        value = t.int("value", low=0 if output.kind == OutputKind.CLASSIFICATION else 1)
        values = read_fields(LabelSpec, t)
        if output.kind == OutputKind.CLASSIFICATION or output.activation == Activation.SOFTMAX \
                or (output.kind == OutputKind.SEGMENTATION
                    and output.activation == Activation.NONE):
            default_channel: int | None = value
        elif output.activation == Activation.LABELMAP:
            default_channel = None
        else:
            default_channel = value - 1
        channel = t.int("channel", default_channel, low=0)
        if output.activation == Activation.LABELMAP and channel is not None:
            t.fail("channel", "not used with activation = 'labelmap' (the value is the label)")
        colour = t.ints("colour", default_of(LabelSpec, "colour"), unique=False)
        if len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
            t.fail("colour", f"must be 3 integers 0..255 (got {list(colour)!r})")
        post = _postprocess(t.table("postprocess", {}))
        if values["reported_value"] is not None and values["split"] is not None:
            t.fail("reported_value", "a split label reports its left and right values")
        labels.append(LabelSpec(value=value, channel=channel,
                                colour=tuple(int(c) for c in colour),  # type: ignore[arg-type]
                                postprocess=post, **values))
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
    raw_fill = t.get("fill_holes", default_of(PostProcess, "fill_holes"))
    fill = {True: FillHoles.D3, False: FillHoles.NONE}[raw_fill] if isinstance(raw_fill, bool) \
        else raw_fill
    if fill not in tuple(FillHoles):
        t.fail("fill_holes", f"must be true, false, '3d' or 'axial' (got {raw_fill!r})")
    out = PostProcess(fill_holes=FillHoles(fill), **read_fields(PostProcess, t))
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
        fields_ = read_fields(Total, t)
        from_after = fields_["from_after"]
        labels = t.ints("labels", default_of(Total, "labels"), nonempty=not from_after)
        if from_after and labels:
            t.fail("labels", "give labels or from_after = true, not both")
        if from_after and not after:
            t.fail("from_after", "needs 'after' (the model whose labels make this total)")
        unknown = [v for v in labels if v not in values]
        if unknown:
            t.fail("labels", f"{unknown} are not label values this model reports")
        if fields_["name"] in [o.name for o in out]:
            top.fail(f"totals[{i}].name", f"duplicate total {fields_['name']!r}")
        out.append(Total(labels=labels, **fields_))
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
    if stage.output.kind != OutputKind.SEGMENTATION:
        top.fail("flags", "only for output.kind = 'segmentation' "
                 f"(got {str(stage.output.kind)!r})")
    if stage.run.mode != RunMode.WHOLE:
        top.fail("flags", f"only for run.mode = 'whole' (got {str(stage.run.mode)!r})")
    if stage.crop is not None:
        top.fail("flags", "not with [crop]: the flag masks must cover the whole model grid")
    if stage.run.mirror_axes:
        top.fail("flags", "not with run.mirror_axes: a mask is not averaged over flips")
    out: list[FlagSpec] = []
    for i, t in enumerate(tables):
        values = read_fields(FlagSpec, t)
        output = values["output"]
        if output == stage.output.name:
            t.fail("output", f"is the label output {output!r}; a flag needs its own output")
        labels = t.ints("labels", tuple(dict.fromkeys(reported)), nonempty=True)
        unknown = [v for v in labels if v not in reported]
        if unknown:
            t.fail("labels", f"{unknown} are not label values this model reports")
        flag = FlagSpec(labels=labels, **values)
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
