"""Left and right for paired structures that a network does not lateralise.

Also where labels get the values the model reports (``reported_value``).

The brain's mid-sagittal plane is found from the image: for every line of voxels running left to
right through the brain (the union of all labels), the midpoint of its extent; a plane
``x = a + b*y + c*z`` (LPS millimetres) is fitted to the midpoints of the lines at least a fifth
as long as the longest, by least squares, dropping outliers twice. A tilted or rotated head
gives a tilted plane, so each voxel of a paired structure goes to the side of the patient it
lies on.
"""

from __future__ import annotations

import numpy as np

from node.imaging.volume import Volume
from node.inference.manifest import Manifest

_MIN_LINE_FRACTION = 0.2  # lines shorter than this fraction of the longest are not used


def midsagittal_plane(brain: np.ndarray, grid: Volume) -> tuple[float, float, float]:
    """(a, b, c) of the plane ``x = a + b*y + c*z`` through the middle of ``brain`` (a mask
    on ``grid``), in LPS millimetres."""
    ax_ijk = int(np.argmax(np.abs(grid.direction[0, :])))  # the grid axis closest to left-right
    axis = 2 - ax_ijk
    inside = brain.astype(bool)
    present = inside.any(axis=axis)
    if not present.any():
        raise RuntimeError("no brain to find the mid-sagittal plane in")
    n = inside.shape[axis]
    first = np.argmax(inside, axis=axis)
    last = n - 1 - np.argmax(np.flip(inside, axis=axis), axis=axis)
    length = np.where(present, last - first + 1, 0)
    use = present & (length >= _MIN_LINE_FRACTION * length.max())
    others = np.nonzero(use)
    middle = (first[use] + last[use]) / 2.0
    kji = np.zeros((middle.size, 3))
    other_axes = [a for a in range(3) if a != axis]
    kji[:, axis] = middle
    kji[:, other_axes[0]] = others[0]
    kji[:, other_axes[1]] = others[1]
    points = grid.index_to_patient(kji[:, ::-1])
    keep = np.ones(len(points), dtype=bool)
    coef = np.zeros(3)
    for _ in range(3):
        design = np.column_stack([np.ones(keep.sum()), points[keep, 1], points[keep, 2]])
        coef, *_ = np.linalg.lstsq(design, points[keep, 0], rcond=None)
        residual = points[:, 0] - (coef[0] + coef[1] * points[:, 1] + coef[2] * points[:, 2])
        spread = 1.4826 * np.median(np.abs(residual[keep])) + 1e-6
        keep = np.abs(residual) <= 3 * spread
    return float(coef[0]), float(coef[1]), float(coef[2])


def report_values(labels: np.ndarray, grid: Volume, manifest: Manifest) -> np.ndarray:
    """``labels`` (the network's values, on ``grid``) under the values the model reports: each
    paired label's voxels get its left or right value by the side of the mid-sagittal plane they
    lie on, a relabelled one its reported value. Returns a new array."""
    moved = [lab for lab in manifest.labels if lab.split is not None or lab.reported_value]
    if not moved or not labels.any():
        return labels
    top = max(side.value for lab in manifest.labels for side in lab.sides())
    out = labels.astype(np.uint8 if top <= 255 else np.uint16, copy=True)
    plane = None
    for lab in moved:
        where = np.nonzero(labels == lab.value)
        if where[0].size == 0:
            continue
        if lab.split is None:  # moved for its reported value
            if lab.reported_value is not None:
                out[where] = lab.reported_value
            continue
        if plane is None:
            plane = midsagittal_plane(labels > 0, grid)
        a, b, c = plane
        points = grid.index_to_patient(np.column_stack(where)[:, ::-1].astype(np.float64))
        left = points[:, 0] > a + b * points[:, 1] + c * points[:, 2]  # LPS: +x is left
        out[tuple(w[left] for w in where)] = lab.split.left
        out[tuple(w[~left] for w in where)] = lab.split.right
    return out
