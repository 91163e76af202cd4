"""Typed, frozen result records: what the SR writer and the JSON output consume.

Numbers are plain Python floats/ints (never numpy scalars), points are LPS millimetres in
patient coordinates, and ``None`` means "not asked for" or "undefined" (an empty region has no
centroid, no mean and no diameter). ``to_dict()`` gives JSON-ready dicts (tuples become lists).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Point = tuple[float, float, float]
Index = tuple[int, int, int]

HOUNSFIELD_UCUM = "[hnsf'U]"
PERCENT_UCUM = "%"


def intensity_unit(modality: str) -> str:
    """UCUM unit of voxel values: Hounsfield units for CT, unitless ("1") otherwise."""
    return HOUNSFIELD_UCUM if modality.upper() == "CT" else "1"


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class DerivedValue:
    """A parametric measurement (percentage below/above a threshold, a percentile)."""

    name: str
    kind: str
    parameter: float  # the threshold, or q for a percentile
    value: float | None  # None for an empty region
    unit: str  # UCUM: "%" for fractions, the intensity unit for percentiles

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "parameter": self.parameter,
            "value": self.value,
            "unit": self.unit,
        }


@dataclass(frozen=True)
class RegionMeasurements:
    """Measurements of one region (a label, a mask, or one lesion) on one grid.

    Geometry: ``volume_ml`` counts whole voxels. ``bbox_lps`` is the axis-aligned LPS box around
    the voxels' *extents* (their outer faces, not their centres), so it contains everything the
    SEG shows. ``max_diameter_mm`` is the Feret diameter between voxel *centres*, as ITK measures
    it, with its two end points: for a voxelised sphere it lies within 0.2 mm below the true
    diameter, while the Feret diameter of the voxel boxes overshoots by about a voxel diagonal
    (2.5 mm on a 0.7 x 0.9 x 2.5 mm grid), so no voxel extent is added; a one-voxel region has
    diameter 0. ``centroid_lps`` is the mean of the voxel centres. ``bbox_index`` is the
    inclusive (i, j, k) index range. ``std`` is the population standard deviation (ddof=0);
    ``derived`` holds the parametric measurements in the order requested.

    ``truncated_at`` names the faces of the imaged volume the region touches, as patient
    directions ("right", "left", "anterior", "posterior", "inferior", "superior"): a region
    cut by the field of view continues beyond it, so its volume and every other measurement
    cover only the imaged part. ``flags`` are the names of the flags the model raised on the
    region (a manifest's ``[[flags]]``: voxels of it the model could not decide).
    """

    label: int | None
    voxel_count: int
    volume_ml: float
    centroid_lps: Point | None = None
    bbox_lps: tuple[Point, Point] | None = None
    bbox_index: tuple[Index, Index] | None = None
    max_diameter_mm: float | None = None
    diameter_endpoints_lps: tuple[Point, Point] | None = None
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    intensity_unit: str = "1"
    derived: tuple[DerivedValue, ...] = field(default_factory=tuple)
    truncated_at: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return self.voxel_count == 0

    @property
    def truncated(self) -> bool:
        """Whether the field of view cuts the region (it touches a face of the volume)."""
        return bool(self.truncated_at)

    def value(self, name: str) -> float | None:
        """A measurement by the name a manifest uses ("volume", "mean", "LAA-950", ...)."""
        for d in self.derived:
            if d.name == name:
                return d.value
        fields = {
            "volume": self.volume_ml,
            "voxel_count": float(self.voxel_count),
            "max_diameter": self.max_diameter_mm,
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
        }
        if name not in fields:
            raise KeyError(f"no measurement named {name!r}")
        return fields[name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "voxel_count": self.voxel_count,
            "volume_ml": self.volume_ml,
            "centroid_lps": _jsonable(self.centroid_lps),
            "bbox_lps": _jsonable(self.bbox_lps),
            "bbox_index": _jsonable(self.bbox_index),
            "max_diameter_mm": self.max_diameter_mm,
            "diameter_endpoints_lps": _jsonable(self.diameter_endpoints_lps),
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "intensity_unit": self.intensity_unit,
            "derived": [d.to_dict() for d in self.derived],
            "truncated": self.truncated,
            "truncated_at": list(self.truncated_at),
            "flags": list(self.flags),
        }


@dataclass(frozen=True)
class Lesion:
    """One connected component of a detection: rank 1 is the largest."""

    rank: int
    measurements: RegionMeasurements
    max_probability: float | None = None  # None when no probability map was given

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "max_probability": self.max_probability,
            "measurements": self.measurements.to_dict(),
        }


@dataclass(frozen=True)
class ClassProbability:
    """One class of a classifier's output, as the SR writer reports it (TID 1501)."""

    index: int
    name: str
    probability: float
    threshold: float | None = None
    present: bool | None = None  # probability >= threshold; None without a threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "probability": self.probability,
            "threshold": self.threshold,
            "present": self.present,
        }
