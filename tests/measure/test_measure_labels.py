"""measure_labels: every label of a label map in one pass, equal to measuring each alone."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from support.phantoms import ANISO_SPACING, centre_of, ellipsoid, grid, rotation, sphere

from node.imaging.volume import Volume
from node.measure import measure_labels, measure_region


def three_organs() -> tuple[Volume, np.ndarray, dict[int, tuple[np.ndarray, float]]]:
    vol = grid((120, 100, 36))
    rng = np.random.default_rng(7)
    vol.array[:] = rng.integers(-100, 100, vol.array.shape)
    labels = np.zeros(vol.array.shape, dtype=np.uint8)
    truth = {}
    for lab, frac, radius in ((2, (0.3, 0.4, 0.5), 10.0), (5, (0.7, 0.6, 0.5), 13.0)):
        c = centre_of(vol, frac)
        labels[sphere(vol, c, radius)] = lab
        truth[lab] = (c, 4 / 3 * math.pi * radius**3 / 1000)
    c = centre_of(vol, (0.5, 0.3, 0.5))
    labels[ellipsoid(vol, c, (16.0, 6.0, 5.0), rotation("z", 50.0))] = 9
    truth[9] = (c, 4 / 3 * math.pi * 16 * 6 * 5 / 1000)
    return vol, labels, truth


def test_each_label_matches_its_analytic_volume_and_centroid() -> None:
    vol, labels, truth = three_organs()
    out = measure_labels(vol, labels)
    assert list(out) == [2, 5, 9]
    for lab, (centre, ml) in truth.items():
        m = out[lab]
        assert m.label == lab
        assert m.volume_ml == pytest.approx(ml, rel=0.02)
        assert np.linalg.norm(np.subtract(m.centroid_lps, centre)) < 0.5 * min(ANISO_SPACING)
    assert out[9].max_diameter_mm == pytest.approx(32.0, abs=max(ANISO_SPACING))


def test_one_pass_equals_measuring_each_mask_alone() -> None:
    vol, labels, _ = three_organs()
    reqs = ["mean", "std", "min", "max", "max_diameter", {"kind": "percentile", "q": 15}]
    together = measure_labels(vol, labels, [9, 2, 5], reqs)
    assert list(together) == [9, 2, 5]
    for lab, m in together.items():
        assert m == measure_region(vol, labels == lab, reqs, label=lab)


def test_absent_label_is_empty_and_label_map_types() -> None:
    vol, labels, _ = three_organs()
    out = measure_labels(vol, labels.astype(np.int16), [5, 7], ["mean"])
    assert out[7].voxel_count == 0 and out[7].mean is None and out[7].centroid_lps is None
    assert out[5].voxel_count == np.count_nonzero(labels == 5)
    with pytest.raises(TypeError, match="integers"):
        measure_labels(vol, labels.astype(np.float32))


def test_five_labels_on_a_full_ct_is_fast() -> None:
    """512 x 512 x 300 CT, two lung-sized and three small labels: 0.3-0.5 s on a quiet 2-core
    machine; the bound leaves room for a busy one."""
    shape = (300, 512, 512)
    k, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    labels = np.zeros(shape, dtype=np.uint8)
    labels[(i - 150) ** 2 + (j - 250) ** 2 + ((k - 150) * 1.6) ** 2 < 110**2] = 1
    labels[(i - 360) ** 2 + (j - 250) ** 2 + ((k - 150) * 1.6) ** 2 < 110**2] = 2
    labels[(i - 256) ** 2 + (j - 100) ** 2 + ((k - 100) * 3) ** 2 < 30**2] = 3
    labels[(i - 256) ** 2 + (j - 400) ** 2 + ((k - 200) * 3) ** 2 < 20**2] = 4
    labels[(i - 256) ** 2 + (j - 256) ** 2 + ((k - 50) * 3) ** 2 < 10**2] = 5
    ct = np.random.default_rng(0).integers(-1000, 1000, shape).astype(np.int16)
    vol = Volume(ct, (0.7, 0.7, 1.25), (-180.0, -180.0, -400.0), modality="CT")
    best = math.inf
    for _ in range(2):
        t = time.perf_counter()
        out = measure_labels(vol, labels, [1, 2, 3, 4, 5])  # default: statistics and diameter
        best = min(best, time.perf_counter() - t)
    assert [m.voxel_count > 0 for m in out.values()] == [True] * 5
    # The long axis runs along k: 2 x 110/1.6 slices x 1.25 mm.
    assert out[1].max_diameter_mm == pytest.approx(2 * 110 / 1.6 * 1.25, abs=1.25)
    assert best < 2.0, f"measure_labels took {best:.2f} s"
