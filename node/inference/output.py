"""What running a model gives back, always on the source series' own grid."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from node.inference.manifest import Code, LabelSpec


@dataclass(frozen=True)
class Timings:
    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0

    @property
    def total(self) -> float:
        return self.preprocess + self.inference + self.postprocess


@dataclass(frozen=True)
class Box:
    """A detected region: label, score, and its corners as source-grid (i, j, k) indices
    (continuous) and in LPS millimetres."""

    label: int
    score: float
    index_min: tuple[float, float, float]
    index_max: tuple[float, float, float]
    lps_min: tuple[float, float, float]
    lps_max: tuple[float, float, float]


@dataclass(frozen=True)
class RaisedFlag:
    """A manifest flag raised on one label: some of its final voxels are in the flag's mask
    (the model could not decide them). Counted on the model grid, after post-processing."""

    label: int  # the reported label value
    name: str  # the flag's name in the manifest
    voxels: int  # voxels of the label inside the mask, on the model grid
    volume_ml: float  # their volume
    concept: Code | None = None  # the SR value the manifest gives (None: the node's own)

    def to_dict(self) -> dict[str, object]:
        return {"label": self.label, "name": self.name, "voxels": self.voxels,
                "volume_ml": self.volume_ml}


@dataclass(frozen=True)
class ModelOutput:
    model: str
    version: str
    kind: str  # segmentation | detection | classification
    labels: tuple[LabelSpec, ...]
    # [k, j, i] on the source grid, uint8 (uint16 beyond 255 labels), 0 = background.
    # Segmentation and heat-map detection (the thresholded heat map, post-processed).
    label_map: np.ndarray | None = None
    # Detection heat map on the source grid, float32 [k, j, i] (one channel: the first label's).
    probability: np.ndarray | None = None
    boxes: tuple[Box, ...] = ()
    # Classification: label value -> probability.
    class_probabilities: Mapping[int, float] = field(default_factory=dict)
    # Slice-wise classification: each slice's probability of each label, (slices, labels).
    slice_probabilities: np.ndarray | None = None
    timings: Timings = Timings()
    provider: str = ""
    after: ModelOutput | None = None  # the output of the model this one ran after
    flags: tuple[RaisedFlag, ...] = ()  # the manifest's [[flags]] raised, label by label

    def label_name(self, value: int) -> str:
        return next(lab.name for lab in self.labels if lab.value == value)

    def flags_of(self, label: int) -> tuple[RaisedFlag, ...]:
        """The flags raised on the label reported under ``label``."""
        return tuple(f for f in self.flags if f.label == label)
