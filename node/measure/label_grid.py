"""Two label maps onto one grid before they are compared: the reference's.

The prediction is resampled onto the reference grid with nearest neighbour (labels are not
interpolated), through node.imaging.resample like every other grid change. Where labelled
prediction voxels fall outside the reference grid (a DICOM SEG's own grid covers only the slices
it has segments on, for instance) the reference grid is first extended, along its own axes, with
background, so that those voxels count as false positives instead of vanishing.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from node.imaging.errors import VolumeError
from node.imaging.resample import resample_like, same_grid
from node.imaging.volume import Volume

__all__ = ["AlignedLabels", "align_labels", "integer_labels"]


@dataclass(frozen=True)
class AlignedLabels:
    """Both label maps on ``reference``'s grid (possibly extended), and what was done."""

    prediction: Volume
    reference: Volume
    resampled: bool  # the prediction was on another grid
    extended: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # voxels added (i, j, k)

    def to_dict(self) -> dict[str, object]:
        return {
            "size_ijk": list(self.reference.shape_ijk),
            "spacing_mm": list(self.reference.spacing),
            "prediction_resampled": self.resampled,
            "reference_extended_voxels_ijk": [list(e) for e in self.extended],
        }


def integer_labels(volume: Volume, what: str) -> Volume:
    """The volume with integer voxels; float voxels must be whole numbers (a label map saved as
    float), otherwise it is a probability map or an image and is refused."""
    array = volume.array
    if array.dtype == np.bool_:
        return volume.with_array(array.astype(np.uint8))
    if np.issubdtype(array.dtype, np.integer):
        return volume
    if not np.all(np.isfinite(array)) or not np.array_equal(array, np.rint(array)):
        raise VolumeError(f"the {what} holds non-integer values: a label map is expected, not a "
                          "probability map or an image")
    lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if lo >= 0 and hi < 2**16:
        return volume.with_array(array.astype(np.uint16))
    return volume.with_array(array.astype(np.int32 if max(-lo, hi) < 2**31 else np.int64))


def align_labels(prediction: Volume, reference: Volume,
                 values: Collection[int] | None = None) -> AlignedLabels:
    """The prediction on the reference grid, that grid extended to hold every prediction voxel
    whose value is in ``values`` (None: every non-zero voxel)."""
    prediction = integer_labels(prediction, "prediction")
    reference = integer_labels(reference, "reference")
    if same_grid(prediction, reference):
        return AlignedLabels(prediction.with_array(prediction.array), reference, False,
                             ((0, 0), (0, 0), (0, 0)))
    reference, extended = _extended(reference, prediction, values)
    moved = resample_like(prediction, reference, interpolation="nearest", default_value=0)
    return AlignedLabels(moved, reference, True, extended)


def _extended(reference: Volume, prediction: Volume, values: Collection[int] | None
              ) -> tuple[Volume, tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]:
    """The reference padded with 0 along its axes to cover the labelled prediction's bounding
    box (its corners: exact for grids whose axes are parallel, generous for oblique ones)."""
    none = ((0, 0), (0, 0), (0, 0))
    labelled = prediction.array != 0 if values is None else np.isin(prediction.array,
                                                                     list(values))
    if not labelled.any():
        return reference, none
    bounds = []
    for axis in (2, 1, 0):  # array axes of i, j, k
        present = np.flatnonzero(labelled.any(axis=tuple(x for x in range(3) if x != axis)))
        bounds.append((int(present[0]), int(present[-1])))
    corners = np.array(list(itertools.product(*bounds)), dtype=np.float64)
    index = reference.patient_to_index(prediction.index_to_patient(corners))
    # The reference voxel each corner falls in, rounded as ITK's nearest neighbour does (a hair
    # generously, so that a centre on a voxel boundary is never lost).
    lo = np.floor(index.min(axis=0) + 0.5 - 1e-6).astype(int)
    hi = np.floor(index.max(axis=0) + 0.5 + 1e-6).astype(int)
    size = np.array(reference.shape_ijk)
    before = np.maximum(0, -lo)
    after = np.maximum(0, hi - (size - 1))
    if not before.any() and not after.any():
        return reference, none
    pad = [(int(before[a]), int(after[a])) for a in (2, 1, 0)]  # array order (k, j, i)
    padded = Volume(
        array=np.pad(reference.array, pad, constant_values=0),
        spacing=reference.spacing,
        origin=tuple(reference.index_to_patient(-before.astype(np.float64))),
        direction=reference.direction.copy(),
        modality=reference.modality,
        frame_of_reference_uid=reference.frame_of_reference_uid,
    )
    return padded, tuple((int(before[a]), int(after[a])) for a in range(3))  # type: ignore[return-value]
