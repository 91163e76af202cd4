"""Lesions: connected components, each measured, ranked by size, with its highest probability."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from support.phantoms import ANISO_SPACING, centre_of, grid, sphere

from node.imaging.volume import Volume
from node.measure import find_lesions, find_lesions_in_probability, min_voxels_for

BALLS = (  # (fraction of the grid, radius mm, peak probability)
    ((0.25, 0.3, 0.5), 6.0, 0.71),
    ((0.7, 0.35, 0.45), 9.0, 0.93),
    ((0.5, 0.75, 0.55), 4.5, 0.82),
)


def three_balls() -> tuple[Volume, np.ndarray, np.ndarray, list[np.ndarray]]:
    vol = grid((130, 110, 40))
    masks = [sphere(vol, centre_of(vol, frac), r) for frac, r, _ in BALLS]
    prob = np.zeros(vol.array.shape, dtype=np.float32)
    for m, (_, _, peak) in zip(masks, BALLS, strict=True):
        prob[m] = 0.6
        k, j, i = np.argwhere(m)[len(np.argwhere(m)) // 2]
        prob[k, j, i] = peak
    # Probability outside every ball (never inside a lesion) must not leak into max_probability.
    prob[0, 0, 0] = 0.99
    mask = np.logical_or.reduce(masks)
    return vol, mask, prob, masks


def test_three_balls_are_three_lesions_largest_first() -> None:
    vol, mask, prob, masks = three_balls()
    lesions = find_lesions(vol, mask, prob)
    assert [les.rank for les in lesions] == [1, 2, 3]
    order = [1, 0, 2]  # radii 9, 6, 4.5
    for les, b in zip(lesions, order, strict=True):
        (frac, radius, peak), m = BALLS[b], masks[b]
        meas = les.measurements
        assert meas.voxel_count == np.count_nonzero(m)
        assert meas.volume_ml == pytest.approx(4 / 3 * math.pi * radius**3 / 1000, rel=0.04)
        assert meas.max_diameter_mm == pytest.approx(2 * radius, abs=max(ANISO_SPACING))
        assert np.linalg.norm(np.subtract(meas.centroid_lps, centre_of(vol, frac))) < 0.35
        assert les.max_probability == pytest.approx(peak)
    json.dumps([les.to_dict() for les in lesions])


def test_min_size_in_voxels_and_mm3() -> None:
    vol, mask, prob, masks = three_balls()
    smallest = np.count_nonzero(masks[2])
    assert len(find_lesions(vol, mask, min_voxels=smallest)) == 3  # at the limit: kept
    assert len(find_lesions(vol, mask, min_voxels=smallest + 1)) == 2
    mm3 = smallest * vol.voxel_volume_mm3
    assert len(find_lesions(vol, mask, min_volume_mm3=mm3)) == 3
    kept = find_lesions(vol, mask, prob, min_volume_mm3=mm3 + 0.5)
    assert [les.max_probability for les in kept] == pytest.approx([0.93, 0.71])
    assert min_voxels_for(vol, 1000.0) == math.ceil(1000.0 / vol.voxel_volume_mm3)
    assert len(find_lesions(vol, mask, max_lesions=1)) == 1


def test_lesions_from_a_thresholded_probability_map() -> None:
    vol, _, prob, masks = three_balls()
    prob[0, 0, 0] = 0.0
    lesions = find_lesions_in_probability(vol, prob, threshold=0.5)
    assert [les.measurements.voxel_count for les in lesions] == [
        np.count_nonzero(masks[b]) for b in (1, 0, 2)
    ]
    # Above 0.75 only the two peak voxels of the 0.93 and 0.82 balls remain: one voxel each.
    peaks = find_lesions_in_probability(vol, prob, threshold=0.75, requested=[])
    assert [les.measurements.voxel_count for les in peaks] == [1, 1]
    assert sorted(les.max_probability for les in peaks) == pytest.approx([0.82, 0.93])


def test_connectivity_corner_touching_voxels() -> None:
    vol = grid((6, 6, 6))
    mask = np.zeros(vol.array.shape, dtype=bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True
    assert len(find_lesions(vol, mask)) == 1
    assert len(find_lesions(vol, mask, connectivity=6)) == 2
    with pytest.raises(ValueError):
        find_lesions(vol, mask, connectivity=8)


def test_empty_mask_gives_no_lesions() -> None:
    vol = grid((8, 8, 8))
    assert find_lesions(vol, np.zeros(vol.array.shape, dtype=bool)) == []
    assert find_lesions_in_probability(vol, np.zeros(vol.array.shape, np.float32)) == []
