"""Agreement metrics against hand counts, HD95 against geometry and a brute-force definition,
label mappings, and label maps on different grids."""

from __future__ import annotations

import numpy as np
import pytest

from node.imaging import VolumeError
from node.imaging.resample import reorient
from node.imaging.volume import Volume
from node.measure.agreement import (
    compare_labels,
    defined_counts,
    evaluate_labels,
    label_agreement,
    mean_agreement,
)
from node.measure.label_grid import align_labels
from node.measure.surface import hd95, surface, surface_distances

ANISO = (0.8, 0.9, 1.5)  # (i, j, k) mm


def labels_on(shape_kji: tuple[int, int, int], spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
              direction=None) -> Volume:
    return Volume(array=np.zeros(shape_kji, dtype=np.uint8), spacing=spacing, origin=origin,
                  direction=np.eye(3) if direction is None else direction)


def ball(volume: Volume, centre, radius: float) -> np.ndarray:
    """Voxels whose centre lies within ``radius`` mm of ``centre`` (LPS)."""
    ni, nj, nk = volume.shape_ijk
    kk, jj, ii = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    xyz = volume.index_to_patient(np.stack([ii, jj, kk], axis=-1))
    return np.linalg.norm(xyz - np.asarray(centre), axis=-1) <= radius


def brute_force_hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """HD95 straight from its definition: 6-neighbour surfaces, all pairwise distances."""
    def surface_points(mask):
        p = np.pad(mask, 1)
        points = []
        for k, j, i in np.argwhere(mask):
            neighbours = [p[k, j + 1, i + 1], p[k + 2, j + 1, i + 1], p[k + 1, j, i + 1],
                          p[k + 1, j + 2, i + 1], p[k + 1, j + 1, i], p[k + 1, j + 1, i + 2]]
            if not all(neighbours):
                points.append((i * spacing[0], j * spacing[1], k * spacing[2]))
        return np.array(points)

    sa, sb = surface_points(a), surface_points(b)
    pairwise = np.linalg.norm(sa[:, None, :] - sb[None, :, :], axis=-1)
    return float(np.percentile(np.concatenate([pairwise.min(axis=1), pairwise.min(axis=0)]), 95))


def test_offset_cubes_by_hand():
    """Two 6 mm cubes, one shifted 2 voxels along i: 6x6x4 = 144 voxels shared of 216 each."""
    pred = np.zeros((20, 20, 20), dtype=bool)
    ref = np.zeros_like(pred)
    pred[2:8, 2:8, 2:8] = True
    ref[2:8, 2:8, 4:10] = True
    r = label_agreement(pred, ref, (1.0, 1.0, 1.0), label=1)
    assert (r.true_positives, r.false_positives, r.false_negatives) == (144, 72, 72)
    assert r.true_negatives == 8000 - 288
    assert r.dice == pytest.approx(2 * 144 / (2 * 144 + 72 + 72))  # 2/3
    assert r.jaccard == pytest.approx(144 / 288)
    assert r.precision == pytest.approx(144 / 216)
    assert r.recall == pytest.approx(144 / 216)
    assert r.specificity == pytest.approx(7712 / (7712 + 72))
    assert r.prediction_ml == pytest.approx(0.216) and r.reference_ml == pytest.approx(0.216)
    assert r.volume_difference_percent == pytest.approx(0.0)
    assert r.hd95_mm == pytest.approx(brute_force_hd95(pred, ref, (1.0, 1.0, 1.0)))


def test_nested_cubes_precision_recall_and_volume_difference():
    """A 4^3 prediction inside an 8^3 reference: precision 1, recall 64/512, volume -87.5 %."""
    pred = np.zeros((12, 12, 12), dtype=bool)
    ref = np.zeros_like(pred)
    ref[2:10, 2:10, 2:10] = True
    pred[4:8, 4:8, 4:8] = True
    r = label_agreement(pred, ref, (2.0, 1.0, 0.5), label=3)
    assert r.precision == 1.0
    assert r.recall == pytest.approx(64 / 512)
    assert r.dice == pytest.approx(2 * 64 / (64 + 512))
    assert r.specificity == 1.0
    assert r.volume_difference_percent == pytest.approx(-87.5)
    assert r.reference_ml == pytest.approx(512 * 1.0 / 1000)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), ANISO], ids=["iso", "aniso"])
def test_hd95_matches_brute_force_definition(spacing):
    rng = np.random.default_rng(11)
    a = rng.random((9, 10, 11)) < 0.25
    b = rng.random((9, 10, 11)) < 0.25
    a[4, 5, 5] = b[0, 0, 0] = True
    assert hd95(a, b, spacing) == pytest.approx(brute_force_hd95(a, b, spacing), abs=1e-4)


def test_hd95_of_a_crop_equals_the_whole_grid():
    """Masks touching the grid's edge: the edge is surface, as the definition says."""
    a = np.zeros((10, 12, 14), dtype=bool)
    b = np.zeros_like(a)
    a[0:4, 0:5, 3:9] = True
    b[1:7, 2:9, 0:6] = True
    assert hd95(a, b, ANISO) == pytest.approx(brute_force_hd95(a, b, ANISO), abs=1e-4)
    assert surface(np.ones((3, 3, 3), bool)).sum() == 26  # all but the centre


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), ANISO], ids=["iso", "aniso"])
def test_concentric_spheres_give_the_radius_difference(spacing):
    grid = labels_on((60, 60, 60), spacing=spacing)
    centre = grid.index_to_patient(np.array(grid.shape_ijk) / 2 - 0.5)
    r, d = 12.0, 5.0
    inner, outer = ball(grid, centre, r), ball(grid, centre, r + d)
    there, back = surface_distances(inner, outer, spacing)
    assert np.median(there) == pytest.approx(d, abs=max(spacing))
    assert np.median(back) == pytest.approx(d, abs=max(spacing))
    result = label_agreement(inner, outer, spacing, label=1)
    assert result.hd95_mm == pytest.approx(d, abs=max(spacing))
    assert result.recall == pytest.approx((r / (r + d)) ** 3, rel=0.1)
    assert result.precision == 1.0


def test_empty_prediction_and_absent_label():
    ref = np.zeros((8, 8, 8), dtype=np.uint8)
    ref[2:5, 2:5, 2:5] = 1
    pred = np.zeros_like(ref)
    results = compare_labels(pred, ref, (1.0, 1.0, 1.0), {1: [1], 7: [7]})
    empty, absent = results
    assert empty.dice == 0.0 and empty.jaccard == 0.0 and empty.recall == 0.0
    assert empty.precision is None and empty.hd95_mm is None
    assert empty.volume_difference_percent == pytest.approx(-100.0)
    assert absent.dice is None and absent.hd95_mm is None and absent.recall is None
    assert absent.specificity == 1.0
    means = mean_agreement(results)
    assert means["dice"] == 0.0 and means["hd95_mm"] is None
    assert defined_counts(results)["dice"] == 1
    empty_ref = label_agreement(ref == 1, pred == 1, (1.0, 1.0, 1.0), label=1)
    assert empty_ref.dice == 0.0 and empty_ref.volume_difference_percent is None
    assert empty_ref.to_dict()["hd95_mm"] is None


def test_without_mapping_every_value_of_either_is_compared():
    pred = np.zeros((6, 6, 6), dtype=np.int16)
    ref = np.zeros_like(pred)
    pred[0:2] = 1
    pred[4:6] = 5
    ref[0:2] = 1
    ref[2:4] = 3
    results = compare_labels(pred, ref, (1.0, 1.0, 1.0))
    assert [r.label for r in results] == [1, 3, 5]
    assert [r.dice for r in results] == [1.0, 0.0, 0.0]
    assert results[0].reference_values == (1,)


def test_mapping_merges_reference_values_and_names_labels():
    """FreeSurfer-style: left (2) and right (41) white matter against one predicted label."""
    ref = labels_on((10, 10, 10))
    ref.array[2:8, 2:8, 1:5] = 2
    ref.array[2:8, 2:8, 5:9] = 41
    ref.array[0, 0, 0] = 4
    pred = ref.with_array(np.where(np.isin(ref.array, [2, 41]), 1, 0).astype(np.uint8))
    [white] = evaluate_labels(pred, ref, {1: [2, 41]}, {1: "white matter"})
    assert white.dice == 1.0 and white.hd95_mm == 0.0
    assert white.reference_values == (2, 41) and white.name == "white matter"
    assert white.true_positives == 6 * 6 * 8
    [left] = evaluate_labels(pred, ref, {1: [2]})
    assert left.recall == 1.0 and left.precision == pytest.approx(0.5)


def test_finer_prediction_grid_is_resampled_onto_the_reference():
    """The same labels at half the spacing, covering the same field of view: Dice 1."""
    ref = labels_on((10, 12, 14), spacing=(2.0, 2.0, 2.0), origin=(0.0, 0.0, 0.0))
    ref.array[2:6, 3:9, 4:10] = 1
    ref.array[7:9, 1:3, 1:3] = 2
    fine = np.repeat(np.repeat(np.repeat(ref.array, 2, 0), 2, 1), 2, 2)
    pred = Volume(array=fine, spacing=(1.0, 1.0, 1.0), origin=(-0.5, -0.5, -0.5))
    aligned = align_labels(pred, ref)
    assert aligned.resampled and aligned.extended == ((0, 0), (0, 0), (0, 0))
    results = evaluate_labels(pred, ref)
    assert [(r.label, r.dice) for r in results] == [(1, 1.0), (2, 1.0)]


def test_reoriented_prediction_is_exact():
    ref = labels_on((8, 9, 10), spacing=ANISO, origin=(10.0, -20.0, 30.0))
    ref.array[2:6, 3:7, 1:9] = 1
    pred = reorient(ref, "RAI")  # same voxels, axes flipped: stored like a SEG's descending slices
    assert not np.array_equal(pred.array, ref.array)
    [r] = evaluate_labels(pred, ref)
    assert r.dice == 1.0 and r.false_positives == 0


def test_prediction_outside_a_cropped_reference_counts_as_false_positive():
    """A DICOM SEG's own grid holds only the slices it has segments on; a prediction voxel on
    another slice must not vanish."""
    full = labels_on((20, 10, 10), spacing=(1.0, 1.0, 2.0))
    full.array[5:10, 3:6, 3:6] = 1
    cropped = Volume(array=full.array[5:10].copy(), spacing=full.spacing,
                     origin=full.index_to_patient([0, 0, 5]), direction=np.eye(3))
    pred = full.with_array(full.array.copy())
    pred.array[15, 4, 4] = 1  # 5 slices beyond the reference's last one
    aligned = align_labels(pred, cropped)
    assert aligned.extended == ((0, 0), (0, 0), (0, 6))
    [r] = evaluate_labels(pred, cropped)
    assert (r.true_positives, r.false_positives, r.false_negatives) == (45, 1, 0)
    assert r.prediction_ml == pytest.approx(46 * 2.0 / 1000)


def test_oblique_prediction_grid():
    """A ball drawn on a grid rotated 30 degrees agrees closely with the same ball on the
    reference grid; its HD95 is about a voxel."""
    ref = labels_on((40, 40, 40), origin=(-20.0, -20.0, -20.0))
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    rotated = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    pred = labels_on((40, 40, 40), origin=tuple(rotated @ [-20.0, -20.0, -20.0]),
                     direction=rotated)
    ref.array[ball(ref, (1.0, 2.0, -1.0), 10.0)] = 1
    pred.array[ball(pred, (1.0, 2.0, -1.0), 10.0)] = 1
    [r] = evaluate_labels(pred, ref)
    assert r.dice > 0.95
    assert r.hd95_mm <= 1.0 + 1e-6


def test_float_label_maps_are_accepted_when_whole_and_refused_otherwise():
    ref = labels_on((4, 4, 4))
    ref.array[1:3, 1:3, 1:3] = 3
    as_float = ref.with_array(ref.array.astype(np.float32))
    [r] = evaluate_labels(as_float, ref)
    assert r.label == 3 and r.dice == 1.0
    probabilities = ref.with_array(np.full((4, 4, 4), 0.5, dtype=np.float32))
    with pytest.raises(VolumeError, match="non-integer values"):
        evaluate_labels(probabilities, ref)


def test_every_crop_matches_the_uncropped_count():
    """compare_labels works on each label's bounding box; the counts are those of the grid."""
    rng = np.random.default_rng(5)
    pred = rng.integers(0, 4, size=(7, 8, 9)).astype(np.uint8)
    ref = rng.integers(0, 4, size=(7, 8, 9)).astype(np.uint8)
    for r in compare_labels(pred, ref, ANISO, {1: [1], 2: [2, 3]}):
        p, q = pred == r.label, np.isin(ref, r.reference_values)
        assert r.true_positives == int((p & q).sum())
        assert r.true_negatives == int((~p & ~q).sum())
        assert r.hd95_mm == pytest.approx(brute_force_hd95(p, q, ANISO), abs=1e-4)


def test_labels_dict_is_json_ready():
    a = np.zeros((3, 3, 3), bool)
    a[1, 1, 1] = True
    d = label_agreement(a, a, (1.0, 1.0, 1.0), label=2, reference_values=(2, 5), name="x").to_dict()
    assert d["reference_values"] == [2, 5] and d["dice"] == 1.0 and d["name"] == "x"
    assert all(isinstance(v, (int, float, str, list, type(None))) for v in d.values())
    assert set(d) >= {"dice", "jaccard", "precision", "recall", "specificity",
                      "prediction_ml", "reference_ml", "volume_difference_percent", "hd95_mm"}
