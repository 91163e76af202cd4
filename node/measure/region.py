"""Measure regions of a volume: one mask, or every label of a label map in one pass.

Each region is measured on the crop of its bounding box, so the cost follows the region's size,
not the volume's. See RegionMeasurements for the geometry model (union of voxel boxes).

A region whose voxels reach a face of the volume (its first or last slice, row or column) is
cut by the field of view: the faces it touches are named as patient directions
(``truncated_at``), so that a report never gives such a volume as if it were whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from node.imaging.volume import Volume
from node.measure import geometry
from node.measure._sitk import label_boxes
from node.measure.requests import (
    DEFAULT_REQUESTS,
    STATISTICS,
    MeasurementRequest,
    RequestLike,
    parse_requests,
)
from node.measure.results import PERCENT_UCUM, DerivedValue, RegionMeasurements, intensity_unit

Crop = tuple[slice, slice, slice]

# LPS axes: the patient direction towards decreasing and increasing x, y, z.
_DIRECTIONS = (("right", "left"), ("anterior", "posterior"), ("inferior", "superior"))
# The order faces are listed in: x, y, z, the negative direction first.
FACES = tuple(name for pair in _DIRECTIONS for name in pair)


def grid_array(volume: Volume, other: np.ndarray | Volume, what: str) -> np.ndarray:
    """The array of ``other`` after checking it lies on ``volume``'s grid."""
    if isinstance(other, Volume):
        same = (
            np.allclose(other.spacing, volume.spacing, rtol=0, atol=1e-4)
            and np.allclose(other.origin, volume.origin, rtol=0, atol=1e-3)
            and np.allclose(other.direction, volume.direction, rtol=0, atol=1e-5)
        )
        if not same:
            raise ValueError(f"the {what} is not on the volume's grid (spacing/origin/direction)")
        other = other.array
    other = np.asarray(other)
    if other.shape != volume.array.shape:
        raise ValueError(f"the {what} has shape {other.shape}; the volume {volume.array.shape}")
    return other


def _requests(requested: Iterable[RequestLike] | None) -> tuple[MeasurementRequest, ...]:
    return DEFAULT_REQUESTS if requested is None else parse_requests(requested)


def measure_region(
    volume: Volume,
    mask: np.ndarray | Volume,
    requested: Iterable[RequestLike] | None = None,
    *,
    label: int | None = None,
) -> RegionMeasurements:
    """Measure the non-zero voxels of ``mask`` on ``volume``; ``requested`` as in a manifest.

    Volume, voxel count, centroid and bounding box are always given; ``requested=None`` means
    DEFAULT_REQUESTS (intensity statistics and maximum diameter).
    """
    reqs = _requests(requested)
    m = grid_array(volume, mask, "mask").astype(bool, copy=False)
    crop = mask_box(m)
    if crop is None:
        return _empty(volume, reqs, label)
    return measure_crop(volume, crop, m[crop], reqs, label)


def mask_box(mask: np.ndarray) -> Crop | None:
    """The [k, j, i] slices of the smallest box holding every True voxel; None when empty."""
    ks, js, is_ = (np.flatnonzero(mask.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    if len(ks) == 0:
        return None
    return (slice(ks[0], ks[-1] + 1), slice(js[0], js[-1] + 1), slice(is_[0], is_[-1] + 1))


def measure_labels(
    volume: Volume,
    label_map: np.ndarray | Volume,
    labels: Sequence[int] | None = None,
    requested: Iterable[RequestLike] | None = None,
    references: Mapping[str, float] | None = None,
) -> dict[int, RegionMeasurements]:
    """Measure each label of an integer label map; one pass finds every label's bounding box.

    ``labels=None`` measures every non-zero label present; a requested label that is absent
    gets an empty RegionMeasurements. The dict keeps the order of ``labels`` (or ascending).
    ``references`` holds the volumes (ml) of the regions ``volume_percent`` is relative to.
    """
    reqs = _requests(requested)
    lm = grid_array(volume, label_map, "label map")
    boxes = label_boxes(lm)
    wanted = sorted(boxes) if labels is None else [int(x) for x in labels]
    out: dict[int, RegionMeasurements] = {}
    for lab in wanted:
        crop = boxes.get(lab)
        if crop is None:
            out[lab] = _empty(volume, reqs, lab, references)
        else:
            out[lab] = measure_crop(volume, crop, lm[crop] == lab, reqs, lab, references)
    return out


def _empty(
    volume: Volume, reqs: tuple[MeasurementRequest, ...], label: int | None,
    references: Mapping[str, float] | None = None,
) -> RegionMeasurements:
    unit = intensity_unit(volume.modality)
    derived = tuple(
        DerivedValue(r.name, r.kind, _parameter(r, references), 0.0 if r.of else None,
                     _derived_unit(r, unit))
        for r in reqs
        if r.threshold is not None or r.q is not None or r.of is not None
    )
    return RegionMeasurements(
        label=label, voxel_count=0, volume_ml=0.0, intensity_unit=unit, derived=derived
    )


def _parameter(r: MeasurementRequest, references: Mapping[str, float] | None = None) -> float:
    """The threshold, q, or the reference volume (ml; NaN when unknown)."""
    if r.of is not None:
        return float((references or {}).get(r.of, float("nan")))
    return float(r.threshold if r.threshold is not None else r.q)  # type: ignore[arg-type]


def _derived_unit(r: MeasurementRequest, unit: str) -> str:
    return unit if r.kind == "percentile" else PERCENT_UCUM


def truncated_faces(volume: Volume, lo: Sequence[int], hi: Sequence[int]) -> tuple[str, ...]:
    """The patient directions of the faces of ``volume`` that an (i, j, k) index box from
    ``lo`` to ``hi`` (inclusive) touches, in FACES order; empty when it lies inside.

    Each voxel axis is named by the LPS axis its direction is closest to (an oblique series
    still has a nearest one), with the sign telling which of its faces is which: on an LPS grid
    column 0 is the patient's right, on a RAS grid (i towards the right) it is the left.
    """
    found: set[str] = set()
    for axis, size in enumerate(volume.shape_ijk):
        column = np.asarray(volume.direction, dtype=np.float64)[:, axis]
        lps = int(np.argmax(np.abs(column)))
        negative, positive = _DIRECTIONS[lps]
        towards_first, towards_last = (negative, positive) if column[lps] > 0 else \
            (positive, negative)
        if lo[axis] <= 0:
            found.add(towards_first)
        if hi[axis] >= size - 1:
            found.add(towards_last)
    return tuple(face for face in FACES if face in found)


def _point(v: np.ndarray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))


def measure_crop(
    volume: Volume,
    crop: Crop,
    mask: np.ndarray,
    reqs: tuple[MeasurementRequest, ...],
    label: int | None,
    references: Mapping[str, float] | None = None,
) -> RegionMeasurements:
    """Measure the region ``mask`` (a boolean array over ``volume.array[crop]``)."""
    count = int(np.count_nonzero(mask))
    if count == 0:
        return _empty(volume, reqs, label, references)
    kinds = {r.kind for r in reqs}
    offset = np.array([crop[2].start, crop[1].start, crop[0].start], dtype=np.float64)  # i, j, k
    linear = volume.direction * np.asarray(volume.spacing)[None, :]
    origin = np.asarray(volume.origin)

    # Centroid from the three projections: no list of voxel coordinates needed.
    mean_ijk = (
        np.array(
            [
                np.dot(mask.sum(axis=(0, 1), dtype=np.int64), np.arange(mask.shape[2])),
                np.dot(mask.sum(axis=(0, 2), dtype=np.int64), np.arange(mask.shape[1])),
                np.dot(mask.sum(axis=(1, 2), dtype=np.int64), np.arange(mask.shape[0])),
            ],
            dtype=np.float64,
        )
        / count
        + offset
    )
    centroid = volume.index_to_patient(mean_ijk)

    cand = geometry.hull_candidates(mask)
    cand_abs = cand + offset.astype(np.int64)
    box = geometry.corner_box(cand_abs, linear, origin)
    lo = offset.astype(int) + cand.min(axis=0)
    hi = offset.astype(int) + cand.max(axis=0)

    diameter = endpoints = None
    if "max_diameter" in kinds:
        d, a, b = geometry.max_diameter(cand_abs, linear)
        ends = volume.index_to_patient(cand_abs[[a, b]])
        diameter, endpoints = d, (_point(ends[0]), _point(ends[1]))

    unit = intensity_unit(volume.modality)
    stats: dict[str, float] = {}
    derived: list[DerivedValue] = []
    needs_values = bool(kinds & STATISTICS) or any(
        r.threshold is not None or r.q is not None for r in reqs
    )
    if needs_values:
        values = volume.array[crop][mask]
        if "mean" in kinds or "std" in kinds:
            mean = float(np.mean(values, dtype=np.float64))
            stats["mean"] = mean
            if "std" in kinds:
                stats["std"] = float(np.sqrt(np.mean((values - mean) ** 2, dtype=np.float64)))
        if "min" in kinds:
            stats["min"] = float(values.min())
        if "max" in kinds:
            stats["max"] = float(values.max())
        for r in reqs:
            if r.kind == "fraction_below":
                value = 100.0 * np.count_nonzero(values < r.threshold) / count
            elif r.kind == "fraction_above":
                value = 100.0 * np.count_nonzero(values > r.threshold) / count
            elif r.kind == "percentile" and r.q is not None:  # a percentile has its q
                value = np.percentile(values, r.q)
            else:
                continue
            derived.append(
                DerivedValue(r.name, r.kind, _parameter(r), float(value), _derived_unit(r, unit))
            )
    volume_ml = count * volume.voxel_volume_mm3 / 1000.0
    for r in reqs:
        if r.of is not None:
            reference = _parameter(r, references)
            percent = 100.0 * volume_ml / reference if reference > 0 else None
            derived.append(DerivedValue(r.name, r.kind, reference, percent, PERCENT_UCUM))

    return RegionMeasurements(
        label=label,
        voxel_count=count,
        volume_ml=volume_ml,
        centroid_lps=_point(centroid),
        bbox_lps=(_point(box[0]), _point(box[1])),
        bbox_index=(
            (int(lo[0]), int(lo[1]), int(lo[2])),
            (int(hi[0]), int(hi[1]), int(hi[2])),
        ),
        max_diameter_mm=diameter,
        diameter_endpoints_lps=endpoints,
        intensity_unit=unit,
        derived=tuple(derived),
        truncated_at=truncated_faces(volume, lo, hi),
        mean=stats.get("mean"),
        std=stats.get("std"),
        min=stats.get("min"),
        max=stats.get("max"),
    )
