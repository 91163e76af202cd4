"""Resampling onto a grid with the same axes as the source (up to a permutation and flips),
in numpy: the same values as SimpleITK, a fraction of the time and memory.

Every model grid of the node is such a grid (reorientation, then spacing), so both directions of
a model run come here: the CT onto the model's grid (``linear``) and the label map back onto the
CT (``label_linear``). Any other grid returns ``None`` and the caller uses SimpleITK.

Positions follow ITK: the continuous source index of each output voxel, linear along i, then j,
then k in double precision, the lower index clamped to the image and a negative distance counted
as 0, the upper index past the last voxel taken as the last voxel; an output voxel whose centre
lies outside the source's voxel boxes (-0.5 <= index < n - 0.5) gets the default value.

- ``linear``: separable, one output slice at a time, from the two source slices it needs; no
  copy of the source (SimpleITK needs a contiguous copy: 300 MiB for a 512x512x300 CT).
- ``label_linear`` (SimpleITK's ``sitkLabelLinear``): each label's indicator (1 inside, 0
  outside) interpolated linearly, the label with the largest value kept. ITK does that for every
  label at every output voxel (~80 M voxels x labels on a CT, 5-10 s). But an output voxel whose
  eight surrounding source voxels hold one label gets that label whatever the weights; only
  voxels in *mixed* cells (at label boundaries, a few percent) are interpolated here. The result
  is SimpleITK's except where two labels tie exactly: ITK's answer there depends on the last
  bit of its rounding, here the smaller label wins (tests/inference/test_aligned.py).
"""

from __future__ import annotations

import itertools

import numpy as np

from node.imaging.volume import Volume

_DIRECTION_TOL = 1e-9
# Interpolated values closer than this are a tie (a mathematical tie such as 0.6 * 5/6 vs 0.5
# rounds either way in the last bit); a tie goes to the smaller label, as ITK means it to.
_TIE = 1e-9

Axes = tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]


def map_linear(
    volume: Volume, grid: Volume, size: tuple[int, int, int], default_value: float,
    reoriented: Volume | None = None,
) -> np.ndarray | None:
    """``volume`` linearly interpolated on ``grid`` of ``size`` (i, j, k): a float32 array
    ``[k, j, i]``; ``None`` when ``grid``'s axes are not ``volume``'s (see the module).

    ``reoriented`` is ``volume`` already permuted/flipped to ``grid``'s orientation code."""
    src = reoriented if reoriented is not None else volume
    axes = _samples(src, grid, size)
    if axes is None:
        return None
    (lo_k, lo_j, lo_i), (hi_k, hi_j, hi_i), (d_k, d_j, d_i), (in_k, in_j, in_i) = axes
    array = src.array
    out = np.empty((size[2], size[1], size[0]), dtype=np.float32)
    fill = np.float32(default_value)
    cache: dict[int, np.ndarray] = {}

    def plane(k: int) -> np.ndarray:
        """Source slice k interpolated along i then j (double), kept for the next slice."""
        if k not in cache:
            rows = array[k]
            a, b = rows[:, lo_i].astype(np.float64), rows[:, hi_i].astype(np.float64)
            along_i = a + (b - a) * d_i
            a, b = along_i[lo_j], along_i[hi_j]
            cache[k] = a + (b - a) * d_j[:, None]
        return cache[k]

    for k in range(size[2]):
        if not in_k[k]:
            out[k] = fill
            continue
        for old in [key for key in cache if key < lo_k[k]]:
            del cache[old]
        a, b = plane(int(lo_k[k])), plane(int(hi_k[k]))
        out[k] = a + (b - a) * d_k[k]
    outside_2d = ~(in_j[:, None] & in_i[None, :])
    if outside_2d.any():
        out[:, outside_2d] = fill
    return out


def map_label_linear(
    volume: Volume, grid: Volume, size: tuple[int, int, int], default_value: float,
    reoriented: Volume | None = None,
) -> np.ndarray | None:
    """``volume``'s labels on ``grid`` (its spacing, origin, direction) of ``size`` (i, j, k), as
    an array ``[k, j, i]``; ``None`` when ``grid`` is not axis-aligned with ``volume``.

    ``reoriented`` is ``volume`` already permuted/flipped to ``grid``'s orientation code, when the
    caller has it. Voxels whose centre lies outside the source's voxel boxes get
    ``default_value``, as with ITK.
    """
    src = reoriented if reoriented is not None else volume
    labels = src.array
    if labels.dtype == np.bool_:
        labels = labels.view(np.uint8)
    if labels.dtype.kind not in "iu":
        return None
    axes = _samples(src, grid, size)
    if axes is None:
        return None
    labels = np.ascontiguousarray(labels)
    lo, hi, dist, inside = axes
    mixed = _mixed_cells(labels)
    out = np.empty((size[2], size[1], size[0]), dtype=labels.dtype)
    fill = np.asarray(default_value).astype(labels.dtype)
    outside_2d = ~(inside[1][:, None] & inside[2][None, :])
    any_outside_2d = bool(outside_2d.any())
    # Output slices with the same lower source slice share their cells: one lookup per group.
    k = 0
    while k < size[2]:
        if not inside[0][k]:
            out[k] = fill
            k += 1
            continue
        z0 = lo[0][k]
        end = k + 1
        while end < size[2] and inside[0][end] and lo[0][end] == z0:
            end += 1
        plane = out[k]
        np.take(np.take(labels[z0], lo[2], axis=1), lo[1], axis=0, out=plane)
        where = np.flatnonzero(np.take(np.take(mixed[z0], lo[2], axis=1), lo[1], axis=0))
        if where.size:
            yi, xi = np.divmod(where, size[0])
            values, xx0, xx1 = _bilinear(
                labels, (z0, hi[0][k]), (lo[1][yi], hi[1][yi]), (lo[2][xi], hi[2][xi]),
                (dist[2][xi], dist[1][yi]),
            )
        for kk in range(k, end):
            if kk > k:
                out[kk] = plane
            if where.size:
                # Last step along k, then the first (smallest) label within _TIE of the top.
                val = xx0 + (xx1 - xx0) * dist[0][kk]
                top = val.max(axis=0)
                out[kk].ravel()[where] = values[np.argmax(val >= top - _TIE, axis=0)]
        k = end
    if any_outside_2d:
        out[:, outside_2d] = fill
    return out


def _axis(c: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lower and upper source index, distance from the lower one, and inside-the-buffer flags,
    as ITK has them: the index is clamped to the image, a negative distance counts as 0, the
    upper index beyond the last voxel is the last voxel, inside means -0.5 <= c < n - 0.5."""
    inside = (c >= -0.5) & (c < n - 0.5)
    lo = np.clip(np.floor(c), 0, n - 1).astype(np.intp)
    d = c - lo
    d[d < 0] = 0.0
    hi = np.minimum(lo + 1, n - 1)
    return lo, hi, d, inside


def _mixed_cells(labels: np.ndarray) -> np.ndarray:
    """True where the cell from voxel ``[k, j, i]`` to ``[k+1, j+1, i+1]`` (clamped at the last
    voxel) holds more than one label."""
    nxt = [np.minimum(np.arange(n) + 1, n - 1) for n in labels.shape]
    diff = np.zeros(labels.shape, dtype=bool)
    for offset in itertools.product((0, 1), repeat=3):
        corner = labels
        for axis, on in enumerate(offset):
            if on:
                corner = np.take(corner, nxt[axis], axis=axis)
        if corner is not labels:
            diff |= corner != labels
    return diff


def _bilinear(
    labels: np.ndarray,
    z: tuple[np.integer, np.integer],
    y: tuple[np.ndarray, np.ndarray],
    x: tuple[np.ndarray, np.ndarray],
    d: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The labels found at the cells' corners (ascending) and, for each, its indicator
    interpolated along i then j on the cells' two k planes: shape (labels, points) twice. The
    order of operations is that of ITK's ``LinearInterpolateImageFunction`` (double precision)."""
    (z0, z1), (y0, y1), (x0, x1) = z, y, x
    d0, d1 = d
    plane0, plane1 = labels[z0], labels[z1]
    corners = [plane0[y0, x0], plane0[y0, x1], plane0[y1, x0], plane0[y1, x1],
               plane1[y0, x0], plane1[y0, x1], plane1[y1, x0], plane1[y1, x1]]
    values = np.unique(np.concatenate(corners))
    xx0 = np.empty((values.size, d0.size))
    xx1 = np.empty((values.size, d0.size))
    for n, value in enumerate(values):
        v000, v100, v010, v110, v001, v101, v011, v111 = (
            (c == value).astype(np.float64) for c in corners)
        x00 = v000 + (v100 - v000) * d0
        x10 = v010 + (v110 - v010) * d0
        xx0[n] = x00 + (x10 - x00) * d1
        x01 = v001 + (v101 - v001) * d0
        x11 = v011 + (v111 - v011) * d0
        xx1[n] = x01 + (x11 - x01) * d1
    return values, xx0, xx1


def _samples(src: Volume, grid: Volume, size: tuple[int, int, int]) -> Axes | None:
    """For each array axis (k, j, i) of the output: lower and upper source index, distance from
    the lower one, inside flags; ``None`` when the axes differ."""
    if not np.allclose(src.direction, grid.direction, atol=_DIRECTION_TOL, rtol=0):
        return None
    # Continuous source index of each output index, per axis: base + n * step.
    to_index = np.linalg.inv(src.direction @ np.diag(src.spacing))
    base = to_index @ (np.asarray(grid.origin, float) - np.asarray(src.origin, float))
    step = np.asarray(grid.spacing, float) / np.asarray(src.spacing, float)
    n_src = src.shape_ijk
    lo, hi, dist, inside = [], [], [], []
    for a in (2, 1, 0):  # array axes are (k, j, i): axis a of (i, j, k) is array axis 2 - a
        c = base[a] + np.arange(size[a], dtype=float) * step[a]
        axis_lo, axis_hi, axis_d, axis_in = _axis(c, n_src[a])
        lo.append(axis_lo)
        hi.append(axis_hi)
        dist.append(axis_d)
        inside.append(axis_in)
    return lo, hi, dist, inside
