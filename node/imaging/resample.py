"""Every resampling of a Volume goes through here, so a result maps back onto its source exactly.

Two kinds of grid change:

- *reorientation* to an orientation code such as ``"LPS"`` or ``"RAS"``: a permutation and flip of
  the voxel axes (no interpolation, exact, reversible); an oblique series stays oblique, its axes
  are only put in the order and sense closest to the code;
- *resampling* to another spacing, size or direction matrix, with SimpleITK. The new grid covers
  the same field of view (voxel boxes, not centres), so down- and up-sampling stay centred.

When the target grid equals the source grid (within 1e-6 mm) nothing is interpolated: the voxels
are returned unchanged. ``resample_like`` puts a model-space result back onto the source grid:
``"nearest"`` or ``"label_linear"`` (one-hot linear then argmax, smoother) for label maps,
``"linear"`` for probabilities. ``"linear"`` and ``"label_linear"`` onto a grid with the same
axes (every model grid) are computed by :mod:`node.imaging.aligned` (SimpleITK's values, without
copying the source; ``label_linear`` ~20x faster on a CT).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import numpy as np
import SimpleITK as sitk

from node.imaging.aligned import map_label_linear, map_linear
from node.imaging.sitk_io import to_sitk
from node.imaging.volume import Volume

Interpolation = Literal["linear", "nearest", "bspline", "label_linear"]

_INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
    "bspline": sitk.sitkBSpline,
    "label_linear": sitk.sitkLabelLinear,
}
_AXIS_LETTERS = {"L": (0, 1), "R": (0, -1), "P": (1, 1), "A": (1, -1), "S": (2, 1), "I": (2, -1)}
_TOL_MM = 1e-6


def orientation_code(direction: np.ndarray) -> str:
    """The letters (DICOM/LPS sense) that the i, j, k axes point towards, e.g. ``"LPS"``."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    letters = []
    for axis in range(3):
        w = int(np.argmax(np.abs(d[:, axis])))
        positive = d[w, axis] > 0
        letters.append(("LPS" if positive else "RAI")[w])
    return "".join(letters)


def _check_code(code: str) -> list[tuple[int, int]]:
    code = code.upper()
    if len(code) != 3 or any(c not in _AXIS_LETTERS for c in code):
        raise ValueError(f"orientation {code!r}: expected three letters from L/R, P/A, S/I")
    axes = [_AXIS_LETTERS[c] for c in code]
    if sorted(w for w, _ in axes) != [0, 1, 2]:
        raise ValueError(f"orientation {code!r}: each of L/R, P/A, S/I must appear once")
    return axes


def reorient(volume: Volume, code: str) -> Volume:
    """Permute and flip the voxel axes so that i, j, k point as close as possible to ``code``.

    Exact (no interpolation) and cheap (numpy views). ``"native"`` returns the volume as is.
    """
    if code.lower() == "native":
        return volume
    wanted = _check_code(code)
    d = volume.direction
    # The permutation of source axes that best matches the wanted world axes (all 6 tried).
    best = max(
        itertools.permutations(range(3)),
        key=lambda p: sum(abs(d[w, p[t]]) for t, (w, _) in enumerate(wanted)),
    )
    flips = [np.sign(d[w, best[t]]) != s for t, (w, s) in enumerate(wanted)]
    if list(best) == [0, 1, 2] and not any(flips):
        return volume
    size = volume.shape_ijk
    # array axes are (k, j, i): the array axis of ijk-axis a is 2 - a.
    array = np.transpose(volume.array, [2 - best[2 - ax] for ax in range(3)])
    for t in range(3):
        if flips[t]:
            array = np.flip(array, axis=2 - t)
    first = [size[best[t]] - 1 if flips[t] else 0 for t in range(3)]
    source_index = np.zeros(3)
    for t in range(3):
        source_index[best[t]] = first[t]
    direction = np.stack(
        [d[:, best[t]] * (-1.0 if flips[t] else 1.0) for t in range(3)], axis=1
    )
    return Volume(
        array=array,
        spacing=(volume.spacing[best[0]], volume.spacing[best[1]], volume.spacing[best[2]]),
        origin=tuple(volume.index_to_patient(source_index)),
        direction=direction,
        modality=volume.modality,
        sources=[] if best[2] != 2 or flips[2] else volume.sources,
        frame_of_reference_uid=volume.frame_of_reference_uid,
    )


def resample(
    volume: Volume,
    spacing: Sequence[float | None] | None = None,
    direction: np.ndarray | str | None = None,
    size: Sequence[int] | None = None,
    interpolation: Interpolation = "linear",
    default_value: float | None = None,
) -> Volume:
    """The volume on a new grid covering the same field of view.

    ``spacing`` and ``size`` are (i, j, k); an entry of ``None`` keeps that axis's spacing.
    With ``size`` and no ``spacing`` the spacing is chosen so the field of view is kept (a resize).
    ``direction``: a 3x3 matrix (columns = LPS axes) resamples; an orientation code such as
    ``"LPS"`` reorients exactly first (see :func:`reorient`). ``default_value`` fills voxels
    outside the source (default: the array's minimum).
    """
    if isinstance(direction, str):
        volume = reorient(volume, direction)
        direction = None
    grid, new_size = resampled_grid(volume, spacing, direction, size)
    return _resample_to(volume, grid, new_size, interpolation, default_value)


def resampled_grid(volume: Volume, spacing: Sequence[float | None] | None = None,
                   direction: np.ndarray | None = None, size: Sequence[int] | None = None
                   ) -> tuple[Volume, tuple[int, int, int]]:
    """The grid (an empty Volume: spacing, origin, direction) and size (i, j, k) that
    :func:`resample` makes, computed without touching the voxels, so that its size can be
    checked before anything is allocated."""
    new_dir = volume.direction if direction is None else np.asarray(direction, float).reshape(3, 3)
    corners = np.array(list(itertools.product(*[(-0.5, n - 0.5) for n in volume.shape_ijk])))
    local = volume.index_to_patient(corners) @ new_dir  # coordinates along the new axes
    lo, hi = local.min(axis=0), local.max(axis=0)
    extent = hi - lo
    if spacing is None:
        spacing = [None, None, None]
    new_spacing = np.array(
        [volume.spacing[a] if (s := spacing[a]) is None else float(s) for a in range(3)]
    )
    if size is None:
        new_size = np.maximum(1, np.rint(extent / new_spacing - 1e-6)).astype(int)
    else:
        new_size = np.asarray(size, dtype=int)
        if any(s is None for s in spacing):
            new_spacing = np.where(
                [s is None for s in spacing], extent / new_size, new_spacing
            )
    origin_local = (lo + hi) / 2 - (new_size - 1) / 2 * new_spacing
    new_origin = new_dir @ origin_local
    grid = Volume(
        array=np.zeros((1, 1, 1), np.uint8),
        spacing=tuple(new_spacing),
        origin=tuple(new_origin),
        direction=new_dir,
    )
    return grid, (int(new_size[0]), int(new_size[1]), int(new_size[2]))


def resize_nearest(volume: Volume, size: Sequence[int]) -> Volume:
    """``volume`` resized to ``size`` (i, j, k) voxels over the same field of view, each voxel
    taking its nearest source voxel.

    The index arithmetic is PyTorch's ``interpolate(mode="nearest-exact")`` (mathematically
    ``floor((d + 0.5) * in / out)``, in torch's single-precision steps; checked against torch
    2.13 for every size up to 600 to and from every size up to 1100), so networks trained with
    it see the same voxels; it is also SimpleITK's nearest neighbour away from exact ties.
    """
    size_ijk = tuple(int(s) for s in size)
    array = volume.array
    for axis_ijk, n_out in enumerate(size_ijk):
        axis = 2 - axis_ijk
        array = np.take(array, nearest_exact_indices(array.shape[axis], n_out), axis=axis)
    return _resized(volume, np.ascontiguousarray(array), size_ijk)


def nearest_exact_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each of ``n_out`` voxels, as torch's nearest-exact computes it on the CPU:
    ``real = float32((d + 0.5) * scale - 0.5)`` (``scale = float32(n_in) / float32(n_out)``),
    clamped at 0, then ``floor(float32(real + 0.5))``."""
    scale = np.float32(n_in) / np.float32(n_out)
    d = np.arange(n_out, dtype=np.float64)
    real = np.maximum(((d + 0.5) * np.float64(scale) - 0.5).astype(np.float32), np.float32(0))
    src = np.floor((real.astype(np.float64) + 0.5).astype(np.float32)).astype(np.int64)
    return np.minimum(src, n_in - 1)


def _resized(volume: Volume, array: np.ndarray, size_ijk: tuple[int, ...]) -> Volume:
    """``array`` on the grid of ``size_ijk`` voxels covering ``volume``'s field of view."""
    scale = np.asarray(volume.shape_ijk, dtype=np.float64) / np.asarray(size_ijk, dtype=np.float64)
    return Volume(
        array=array,
        spacing=tuple(np.asarray(volume.spacing) * scale),
        origin=tuple(volume.index_to_patient(0.5 * scale - 0.5)),
        direction=volume.direction.copy(),
        modality=volume.modality,
        frame_of_reference_uid=volume.frame_of_reference_uid,
    )


def conform_grid(volume: Volume, size: Sequence[int], spacing: Sequence[float], code: str
                 ) -> Volume:
    """An empty grid as FreeSurfer conforms: ``size`` voxels (i, j, k) of ``spacing`` mm, axes
    exactly along ``code``, voxel ``size / 2`` at the patient point of the source's voxel
    ``shape / 2`` (FreeSurfer's centre of the field of view, ``c_ras``)."""
    axes = _check_code(code)
    direction = np.zeros((3, 3))
    for t, (w, sign) in enumerate(axes):
        direction[w, t] = sign
    centre = volume.index_to_patient(np.asarray(volume.shape_ijk, dtype=np.float64) / 2)
    half = np.asarray(size, dtype=np.float64) / 2 * np.asarray(spacing, dtype=np.float64)
    origin = centre - direction @ half
    return Volume(array=np.zeros((1, 1, 1), np.uint8), spacing=(spacing[0], spacing[1], spacing[2]),
                  origin=tuple(origin), direction=direction)


def resample_inside(volume: Volume, grid: Volume, size: Sequence[int]) -> Volume:
    """``volume`` on ``grid``'s geometry with ``size`` voxels, trilinear where all eight
    neighbours of a point lie inside the source and 0 elsewhere, the weights from the fractional
    index parts in double precision: niivue's ``conform`` (which brainchop runs), voxel for voxel
    up to rounding, so networks trained on its output see the same intensities. A grid that is
    the source's own (or a permutation of it) gets the source's voxels, untouched."""
    exact = reorient(volume, orientation_code(grid.direction))
    if exact.shape_ijk == tuple(size) and np.allclose(exact.direction, grid.direction, atol=1e-6) \
            and np.allclose(exact.spacing, grid.spacing, atol=1e-6) \
            and np.allclose(exact.origin, grid.origin, atol=1e-4):  # float32 headers (MGZ)
        return _on_grid(exact.array.astype(np.float32), grid, volume)
    vox2vox = np.linalg.inv(volume.affine) @ grid.affine  # grid (i, j, k, 1) -> source index
    src = volume.array.astype(np.float64, copy=False)
    k_n, j_n, i_n = src.shape
    size_i, size_j, size_k = (int(s) for s in size)
    out = np.zeros((size_k, size_j, size_i), dtype=np.float32)
    jj, ii = np.mgrid[0:size_j, 0:size_i].astype(np.float64)
    for k in range(size_k):
        pos = [vox2vox[r, 0] * ii + (vox2vox[r, 1] * jj + (vox2vox[r, 2] * k + vox2vox[r, 3]))
               for r in range(3)]
        pos = [np.where(np.abs(p - np.rint(p)) < 1e-6, np.rint(p), p) for p in pos]
        low = [np.floor(p) for p in pos]
        ok = np.ones(ii.shape, dtype=bool)
        for p, f, n in zip(pos, low, (i_n, j_n, k_n), strict=True):
            ok &= (f >= 0) & (np.ceil(p) < n)
        if not ok.any():
            continue
        fi, fj, fk = (f[ok].astype(np.int64) for f in low)
        ci, cj, ck = (p[ok] - f[ok] for p, f in zip(pos, low, strict=True))
        # a neighbour beyond the last voxel only ever has weight 0 (ceil < n keeps it inside)
        i1, j1, k1 = (np.minimum(f + 1, n - 1) for f, n in ((fi, i_n), (fj, j_n), (fk, k_n)))
        value = np.zeros(ci.shape)
        for kk, wk in ((fk, 1 - ck), (k1, ck)):
            for jx, wj in ((fj, 1 - cj), (j1, cj)):
                for ix, wi in ((fi, 1 - ci), (i1, ci)):
                    value += src[kk, jx, ix] * (wi * wj * wk)
        out[k][ok] = value.astype(np.float32)
    return _on_grid(out, grid, volume)


def resample_onto(volume: Volume, grid: Volume, size: Sequence[int],
                  interpolation: Interpolation = "linear", default_value: float | None = None
                  ) -> Volume:
    """``volume`` on ``grid``'s geometry (spacing, origin, direction) with ``size`` voxels."""
    return _resample_to(volume, grid, tuple(int(s) for s in size), interpolation,  # type: ignore[arg-type]
                        default_value)


def resample_like(
    volume: Volume,
    reference: Volume,
    interpolation: Interpolation = "nearest",
    default_value: float = 0,
) -> Volume:
    """``volume`` on exactly the grid of ``reference`` (its spacing, origin, direction, size).

    Keeps ``reference``'s sources and frame of reference; exact when the grids are the same or
    differ by a permutation/flip of axes.
    """
    out = _resample_to(volume, reference, reference.shape_ijk, interpolation, default_value)
    return replace(reference.with_array(out.array), modality=volume.modality)


def same_grid(a: Volume, b: Volume, size_b: Sequence[int] | None = None) -> bool:
    size_b = tuple(size_b) if size_b is not None else b.shape_ijk
    return (
        a.shape_ijk == tuple(size_b)
        and np.allclose(a.spacing, b.spacing, atol=_TOL_MM, rtol=0)
        and np.allclose(a.origin, b.origin, atol=_TOL_MM, rtol=0)
        and np.allclose(a.direction, b.direction, atol=1e-9, rtol=0)
    )


def _resample_to(
    volume: Volume,
    grid: Volume,
    size: tuple[int, int, int],
    interpolation: Interpolation,
    default_value: float | None,
) -> Volume:
    if interpolation not in _INTERPOLATORS:
        raise ValueError(f"interpolation {interpolation!r}: use one of {', '.join(_INTERPOLATORS)}")
    candidate = volume
    if not same_grid(volume, grid, size):
        # A pure permutation/flip of the target grid is done exactly with numpy.
        code = orientation_code(grid.direction)
        candidate = reorient(volume, code)
        if same_grid(candidate, grid, size):
            volume = candidate
    if same_grid(volume, grid, size):  # the source's own geometry, not a recomputed copy
        return volume.with_array(volume.array)
    if interpolation in ("linear", "label_linear"):  # grids with the same axes: numpy
        fill = default_value
        if fill is None:
            fill = float(volume.array.min()) if volume.array.size else 0.0
        mapper = map_linear if interpolation == "linear" else map_label_linear
        mapped = mapper(volume, grid, size, fill, reoriented=candidate)
        if mapped is not None:
            return _on_grid(mapped, grid, volume)
    array = volume.array
    if interpolation in ("linear", "bspline") and array.dtype != np.float32:
        array = array.astype(np.float32)
    if array.dtype == np.bool_:
        array = array.view(np.uint8)
    if default_value is None:
        default_value = float(array.min()) if array.size else 0.0
    image = to_sitk(volume.with_array(array) if array is not volume.array else volume)
    f = sitk.ResampleImageFilter()
    f.SetSize([int(s) for s in size])
    f.SetOutputSpacing([float(s) for s in grid.spacing])
    f.SetOutputOrigin([float(o) for o in grid.origin])
    f.SetOutputDirection([float(v) for v in grid.direction.ravel()])
    f.SetInterpolator(_INTERPOLATORS[interpolation])
    f.SetDefaultPixelValue(float(default_value))
    f.SetOutputPixelType(image.GetPixelID())
    out = sitk.GetArrayFromImage(f.Execute(image))
    del image
    return _on_grid(out, grid, volume)


def _on_grid(array: np.ndarray, grid: Volume, volume: Volume) -> Volume:
    """Resampled voxels: ``grid``'s geometry, ``volume``'s modality and frame of reference; no
    slice sources (the slices are new)."""
    return Volume(
        array=array,
        spacing=grid.spacing,
        origin=grid.origin,
        direction=grid.direction.copy(),
        modality=volume.modality,
        frame_of_reference_uid=volume.frame_of_reference_uid,
    )
