"""The one SimpleITK conversion this package needs: a numpy grid to an index-space image.

Only index-space filters run here (shape statistics for bounding boxes, connected components),
so the image carries no geometry; physical measurements are done with the Volume's own affine.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

_LABEL_TYPES = (np.uint8, np.uint16, np.uint32, np.int8, np.int16, np.int32, np.uint64, np.int64)


def label_image(array: np.ndarray) -> sitk.Image:
    """An integer image of ``array`` ([k, j, i]); booleans become uint8."""
    if array.dtype == np.bool_:
        array = array.view(np.uint8)
    elif not any(array.dtype == t for t in _LABEL_TYPES):
        raise TypeError(f"a label map holds integers; got dtype {array.dtype}")
    return sitk.GetImageFromArray(np.ascontiguousarray(array))


def _boxes(image: sitk.Image) -> dict[int, tuple[slice, slice, slice]]:
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.ComputePerimeterOff()
    stats.ComputeFeretDiameterOff()
    stats.Execute(image)
    boxes: dict[int, tuple[slice, slice, slice]] = {}
    for label in stats.GetLabels():
        i0, j0, k0, si, sj, sk = stats.GetBoundingBox(label)
        boxes[int(label)] = (slice(k0, k0 + sk), slice(j0, j0 + sj), slice(i0, i0 + si))
    return boxes


def label_boxes(array: np.ndarray) -> dict[int, tuple[slice, slice, slice]]:
    """Every non-zero label of ``array`` and its bounding box as [k, j, i] slices, in one pass."""
    return _boxes(label_image(array))


def connected_components(
    mask: np.ndarray, fully_connected: bool, min_voxels: int
) -> tuple[np.ndarray, dict[int, tuple[slice, slice, slice]]]:
    """Components of ``mask`` numbered 1.. by decreasing size, without those below min_voxels,
    and the bounding box of each."""
    cc = sitk.ConnectedComponent(label_image(mask.astype(bool, copy=False)), fully_connected)
    relabelled = sitk.RelabelComponent(cc, minimumObjectSize=int(min_voxels), sortByObjectSize=True)
    boxes = _boxes(relabelled)
    if len(boxes) < 2**16:  # a quarter of the memory of SimpleITK's uint32 output
        relabelled = sitk.Cast(relabelled, sitk.sitkUInt16)
    return sitk.GetArrayFromImage(relabelled), boxes
