"""Surface distances between two masks on one grid, in millimetres: what HD95 is made of.

Definitions (the ones docs/evaluate.md states):

- the *surface* of a mask is its voxels with at least one of the 6 face neighbours outside the
  mask; voxels beyond the grid's edge count as outside, so a mask touching the edge has a surface
  there;
- the distance from a surface voxel of A to B is the Euclidean distance, in mm, from its centre to
  the nearest centre of a surface voxel of B (spacing applied per axis; the direction matrix is a
  rotation and does not change distances);
- HD95 is the 95th percentile (numpy's default, linear interpolation) of the pooled distances in
  both directions: every surface voxel of A to B, and every surface voxel of B to A.

Distances to a set of voxels come from SimpleITK's SignedMaurerDistanceMap (exact Euclidean
distances with spacing): its magnitude outside the set is the distance to the set's nearest
boundary voxel, which is the set's nearest voxel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

__all__ = ["hd95", "surface", "surface_distances"]


def surface(mask: np.ndarray) -> np.ndarray:
    """The voxels of ``mask`` ([k, j, i] booleans) with a face neighbour outside it."""
    mask = np.asarray(mask, dtype=bool)
    p = np.pad(mask, 1, constant_values=False)
    interior = (
        mask
        & p[:-2, 1:-1, 1:-1] & p[2:, 1:-1, 1:-1]
        & p[1:-1, :-2, 1:-1] & p[1:-1, 2:, 1:-1]
        & p[1:-1, 1:-1, :-2] & p[1:-1, 1:-1, 2:]
    )
    return mask & ~interior


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of ``a`` to the surface of ``b``, and back.

    ``spacing`` is (i, j, k) like a Volume's. Both masks must be non-empty. The work is done on
    the crop of their joint bounding box, so it follows the structures' size, not the grid's.
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if not a.any() or not b.any():
        raise ValueError("surface distances need two non-empty masks")
    box = _joint_box(a, b)
    # Outside the box both masks are empty, so cropping changes no surface voxel (a neighbour
    # beyond the crop is outside the mask either way), and the nearest surface voxel of the other
    # mask is always inside the crop.
    surface_a, surface_b = surface(a[box]), surface(b[box])
    return (_distance_to(surface_b, spacing)[surface_a],
            _distance_to(surface_a, spacing)[surface_b])


def hd95(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> float | None:
    """The symmetric 95th percentile Hausdorff distance in mm; None when a mask is empty (the
    distance to nothing is undefined: infinite)."""
    if not np.any(a) or not np.any(b):
        return None
    there, back = surface_distances(a, b, spacing)
    return float(np.percentile(np.concatenate([there, back]), 95))


def _distance_to(target: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distance (mm) from every voxel centre to the nearest voxel of ``target``."""
    image = sitk.GetImageFromArray(target.astype(np.uint8))
    image.SetSpacing([float(s) for s in spacing])
    signed = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False,
                                          useImageSpacing=True, backgroundValue=0.0)
    distance = np.abs(sitk.GetArrayFromImage(signed).astype(np.float64))
    distance[target] = 0.0  # inside the set (not only on its boundary) the distance is 0
    return distance


def _joint_box(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...]:
    either = a | b
    box = []
    for axis in range(3):
        present = np.flatnonzero(either.any(axis=tuple(x for x in range(3) if x != axis)))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)
