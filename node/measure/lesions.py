"""Detections as lesions: connected components of a mask, each measured on its own.

Components are 26-connected by default (touching by a corner is one lesion) and numbered by
decreasing voxel count (SimpleITK's RelabelComponent; ties in its deterministic order). Only
the box around the whole mask is labelled, and each lesion is measured on its own box.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from node.imaging.volume import Volume
from node.measure._sitk import connected_components
from node.measure.region import _requests, grid_array, mask_box, measure_crop
from node.measure.requests import RequestLike
from node.measure.results import Lesion


def min_voxels_for(volume: Volume, min_volume_mm3: float = 0.0, min_voxels: int = 0) -> int:
    """The smallest voxel count that meets both minimum sizes on ``volume``'s grid."""
    by_volume = math.ceil(min_volume_mm3 / volume.voxel_volume_mm3 - 1e-9) if min_volume_mm3 else 0
    return max(int(min_voxels), by_volume, 1)


def find_lesions(
    volume: Volume,
    mask: np.ndarray | Volume,
    probability: np.ndarray | Volume | None = None,
    requested: Iterable[RequestLike] | None = None,
    *,
    min_volume_mm3: float = 0.0,
    min_voxels: int = 0,
    connectivity: int = 26,
    max_lesions: int | None = None,
) -> list[Lesion]:
    """Connected components of ``mask`` as lesions, largest first, each with its measurements.

    Components smaller than ``min_volume_mm3`` or ``min_voxels`` are dropped. With a
    ``probability`` map, each lesion carries the highest probability inside it.
    """
    if connectivity not in (6, 26):
        raise ValueError(f"connectivity is 6 or 26; got {connectivity}")
    reqs = _requests(requested)
    m = grid_array(volume, mask, "mask") != 0
    prob = None if probability is None else grid_array(volume, probability, "probability map")
    # Label only the box around the whole mask: detections are often few and close together.
    outer = mask_box(m)
    if outer is None:
        return []
    components, boxes = connected_components(
        m[outer],
        fully_connected=connectivity == 26,
        min_voxels=min_voxels_for(volume, min_volume_mm3, min_voxels),
    )
    lesions: list[Lesion] = []
    for rank in sorted(boxes)[: max_lesions if max_lesions is not None else None]:
        inner = boxes[rank]
        region = components[inner] == rank
        i, j, k = (
            slice(o.start + s.start, o.start + s.stop) for o, s in zip(outer, inner, strict=True)
        )
        crop = (i, j, k)
        measured = measure_crop(volume, crop, region, reqs, rank)
        max_p = None if prob is None else float(prob[crop][region].max())
        lesions.append(Lesion(rank=rank, measurements=measured, max_probability=max_p))
    return lesions


def find_lesions_in_probability(
    volume: Volume,
    probability: np.ndarray | Volume,
    threshold: float = 0.5,
    requested: Iterable[RequestLike] | None = None,
    **options: object,
) -> list[Lesion]:
    """Lesions where ``probability >= threshold``; options as for find_lesions."""
    prob = grid_array(volume, probability, "probability map")
    return find_lesions(volume, prob >= threshold, prob, requested, **options)  # type: ignore[arg-type]
