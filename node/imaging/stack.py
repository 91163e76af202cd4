"""Frames to a regular grid: sort along the slice normal, check the spacing, refuse what is not a
volume (mixed sizes or orientations, duplicates, gaps, gantry tilt).

Spacing between slices comes from the positions, never from SliceThickness (overlapping or
gapped reconstructions make those differ).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from node.imaging.dicom_frames import Frame
from node.imaging.errors import VolumeError

ORIENTATION_TOLERANCE = 1e-3  # per direction cosine
PIXEL_SPACING_TOLERANCE = 1e-3  # relative
DUPLICATE_TOLERANCE_MM = 5e-3  # slices closer than this along the normal are the same position
MISSING_SLICE_FACTOR = 1.5  # a gap above this times the median spacing is a missing slice
SPACING_TOLERANCE = 0.02  # relative spread of gaps allowed around the median...
SPACING_TOLERANCE_MM = 0.01  # ...but never less than this (positions are rounded decimals)
TILT_TOLERANCE_MM = 0.01  # in-plane drift allowed between slices, plus...
TILT_TOLERANCE_SLOPE = 1e-3  # ...this much per mm along the normal (about 0.06 degrees)
# What images of a patient can be: pixels from a micrometre (micro-CT, pathology) to 20 mm
# (the coarsest nuclear medicine), slices up to 100 mm apart, no side longer than 2.5 m. Beyond
# these a header is wrong or hostile, and resampling it would make a gigantic grid.
MIN_SPACING_MM = 1e-3
MAX_PIXEL_SPACING_MM = 20.0
MAX_SLICE_SPACING_MM = 100.0
MAX_EXTENT_MM = 2500.0


@dataclass(frozen=True)
class StackGeometry:
    order: list[int]  # frame indices in slice (k) order
    spacing: tuple[float, float, float]  # (i, j, k) mm
    origin: tuple[float, float, float]
    direction: np.ndarray  # columns: LPS unit vectors of i, j, k


def stack_geometry(frames: Sequence[Frame]) -> StackGeometry:
    """Sort and validate frames into one regular grid, or raise VolumeError naming the reason."""
    if not frames:
        raise VolumeError("no image frames to stack")
    sizes = sorted({(f.rows, f.columns) for f in frames})
    if len(sizes) > 1:
        listed = ", ".join(f"{r}x{c}" for r, c in sizes[:4])
        raise VolumeError(f"mixed image sizes (rows x columns): {listed}")
    placed = [f for f in frames if f.position is not None]
    if not placed:
        return _plausible(_projection_geometry(frames), frames)
    if len(placed) != len(frames):
        raise VolumeError(
            f"{len(frames) - len(placed)} of {len(frames)} images have no ImagePositionPatient"
        )
    if any(f.orientation is None for f in frames):
        raise VolumeError("images have ImagePositionPatient but no ImageOrientationPatient")

    row, col, normal = _orientation(frames)
    spacing_rc = _pixel_spacing(frames)
    positions = np.stack([f.position for f in frames])  # type: ignore[misc]
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along = along[order]
    if len(frames) == 1:
        step = frames[0].slice_step or 1.0
    else:
        step = _slice_step(along)
        _check_tilt(positions[order], normal)
    direction = np.column_stack([row, col, normal])
    return _plausible(StackGeometry(
        order=[int(i) for i in order],
        spacing=(spacing_rc[1], spacing_rc[0], step),
        origin=tuple(float(v) for v in positions[order[0]]),  # type: ignore[arg-type]
        direction=direction,
    ), frames)


def _plausible(geometry: StackGeometry, frames: Sequence[Frame]) -> StackGeometry:
    """Refuse voxel sizes and extents that no image of a patient has (see the limits above)."""
    column_mm, row_mm, step = geometry.spacing
    for name, value in (("PixelSpacing (rows)", row_mm), ("PixelSpacing (columns)", column_mm)):
        if not MIN_SPACING_MM <= value <= MAX_PIXEL_SPACING_MM:
            raise VolumeError(f"implausible geometry: {name} {value:.4g} mm (images of a "
                              f"patient have pixels of {MIN_SPACING_MM:g} to "
                              f"{MAX_PIXEL_SPACING_MM:g} mm)")
    if not MIN_SPACING_MM <= step <= MAX_SLICE_SPACING_MM:
        raise VolumeError(f"implausible geometry: slices {step:.4g} mm apart (at most "
                          f"{MAX_SLICE_SPACING_MM:g} mm)")
    sides = (("columns", frames[0].columns * column_mm), ("rows", frames[0].rows * row_mm),
             ("slices", len(frames) * step))
    for name, mm in sides:
        if mm > MAX_EXTENT_MM:
            raise VolumeError(f"implausible geometry: the {name} span {mm:.4g} mm (no side of "
                              f"a patient's image is longer than {MAX_EXTENT_MM:g} mm)")
    return geometry


def _projection_geometry(frames: Sequence[Frame]) -> StackGeometry:
    """A 2D image without patient position (CR, DX, MG, ...): one slice at the origin."""
    if len(frames) > 1:
        raise VolumeError(
            f"{len(frames)} 2D images without ImagePositionPatient cannot be stacked; "
            "load one at a time"
        )
    frame = frames[0]
    spacing = frame.pixel_spacing or _imager_spacing(frame) or (1.0, 1.0)
    return StackGeometry(
        order=[0],
        spacing=(spacing[1], spacing[0], 1.0),
        origin=(0.0, 0.0, 0.0),
        direction=np.eye(3),
    )


def _imager_spacing(frame: Frame) -> tuple[float, float] | None:
    value = frame.obj.ds.get("ImagerPixelSpacing")
    try:
        spacing = tuple(float(v) for v in value) if value else ()
    except (TypeError, ValueError):
        return None
    if len(spacing) == 2 and min(spacing) > 0:
        return (spacing[0], spacing[1])
    return None


def _orientation(frames: Sequence[Frame]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cosines = np.stack([f.orientation for f in frames])  # type: ignore[misc]
    if np.max(np.abs(cosines - cosines[0])) > ORIENTATION_TOLERANCE:
        distinct = len({tuple(np.round(c, 2)) for c in cosines})
        raise VolumeError(
            f"mixed orientations: {distinct} distinct ImageOrientationPatient values "
            "(localizers or several stacks in one series?)"
        )
    row, col = cosines[0][:3], cosines[0][3:]
    norms = np.linalg.norm(row), np.linalg.norm(col)
    if min(norms) < 0.5 or abs(float(row @ col)) / (norms[0] * norms[1]) > ORIENTATION_TOLERANCE:
        raise VolumeError("ImageOrientationPatient is not two orthogonal unit vectors")
    row = row / norms[0]
    col = col / norms[1]
    normal = np.cross(row, col)
    return row, col, normal / np.linalg.norm(normal)


def _pixel_spacing(frames: Sequence[Frame]) -> tuple[float, float]:
    spacings = [f.pixel_spacing for f in frames]
    if any(s is None for s in spacings):
        raise VolumeError("images have no PixelSpacing: a volume needs its voxel size")
    values = np.array(spacings, dtype=np.float64)
    if np.max(np.abs(values - values[0]) / values[0]) > PIXEL_SPACING_TOLERANCE:
        raise VolumeError(f"mixed pixel spacing: {len(np.unique(values, axis=0))} distinct values")
    return (float(values[0][0]), float(values[0][1]))


def _slice_step(along: np.ndarray) -> float:
    """The slice spacing from sorted positions along the normal; refuses duplicates and gaps."""
    gaps = np.diff(along)
    duplicates = int(np.sum(gaps < DUPLICATE_TOLERANCE_MM))
    if duplicates:
        raise VolumeError(
            f"duplicate slice positions: {duplicates} of {len(along)} slices share a position "
            "with another (several acquisitions, echoes or time points in one series?)"
        )
    median = float(np.median(gaps))
    large = gaps > MISSING_SLICE_FACTOR * median
    if np.any(large):
        missing = int(np.sum(np.rint(gaps[large] / median) - 1).clip(min=1))
        raise VolumeError(
            f"missing slices: gap of {float(gaps[large].max()):.3g} mm where slices are "
            f"{median:.3g} mm apart (about {missing} slice(s) missing)"
        )
    tolerance = max(SPACING_TOLERANCE_MM, SPACING_TOLERANCE * median)
    if float(np.max(np.abs(gaps - median))) > tolerance:
        raise VolumeError(
            f"uneven slice spacing: gaps from {float(gaps.min()):.4g} to "
            f"{float(gaps.max()):.4g} mm"
        )
    return float((along[-1] - along[0]) / (len(along) - 1))


def _check_tilt(positions: np.ndarray, normal: np.ndarray) -> None:
    """Refuse stacks whose positions do not move along the slice normal (gantry tilt)."""
    offsets = positions - positions[0]
    along = offsets @ normal
    drift = np.linalg.norm(offsets - along[:, None] * normal[None, :], axis=1)
    if np.any(drift > TILT_TOLERANCE_MM + TILT_TOLERANCE_SLOPE * np.abs(along)):
        angle = math.degrees(math.atan2(float(drift[-1]), abs(float(along[-1]))))
        raise VolumeError(
            f"gantry tilt: slice positions move {angle:.1f} degrees off the slice normal; "
            "the slices form a sheared, not a rectangular, grid (resample before loading)"
        )
