"""Regions cut by the field of view: the faces they touch, as patient directions."""

from __future__ import annotations

import numpy as np
import pytest

from node.imaging.volume import Volume
from node.measure import find_lesions, measure_labels, measure_region

LPS = np.eye(3)
RAS = np.diag([-1.0, -1.0, 1.0])
# A sagittal grid: columns run anterior -> posterior (+y), rows superior -> inferior (-z),
# slices right -> left (+x).
SAGITTAL = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
SHAPE = (6, 7, 8)  # k, j, i

# Where a one-voxel region sits (k, j, i), and the face it touches on LPS, RAS, sagittal.
FACES = [
    ((3, 3, 0), "right", "left", "anterior"),
    ((3, 3, 7), "left", "right", "posterior"),
    ((3, 0, 4), "anterior", "posterior", "superior"),
    ((3, 6, 4), "posterior", "anterior", "inferior"),
    ((0, 3, 4), "inferior", "inferior", "right"),
    ((5, 3, 4), "superior", "superior", "left"),
]


def _volume(direction: np.ndarray) -> Volume:
    return Volume(np.zeros(SHAPE, np.float32), (0.8, 0.9, 2.5), (10.0, -20.0, 30.0), direction)


@pytest.mark.parametrize(("at", "lps", "ras", "sagittal"), FACES)
def test_one_face_names_its_patient_direction(at, lps, ras, sagittal):
    mask = np.zeros(SHAPE, bool)
    mask[at] = True
    for direction, face in ((LPS, lps), (RAS, ras), (SAGITTAL, sagittal)):
        m = measure_region(_volume(direction), mask, ["volume"])
        assert (m.truncated, m.truncated_at) == (True, (face,))
        assert m.to_dict()["truncated_at"] == [face] and m.to_dict()["truncated"] is True


def test_inside_is_not_truncated_and_a_slab_touches_both_ends():
    labels = np.zeros(SHAPE, np.uint8)
    labels[1:5, 1:6, 1:7] = 1  # one voxel from every face
    labels[0:6, 3, 3] = 2  # through every slice
    labels[2, 0:7, 0:8] = 3  # a whole slice: four faces in plane
    labels[2, 3, 3] = 1
    got = measure_labels(_volume(LPS), labels, requested=["volume"])
    assert (got[1].truncated, got[1].truncated_at) == (False, ())
    assert got[1].to_dict()["truncated_at"] == []
    assert got[2].truncated_at == ("inferior", "superior")
    assert got[3].truncated_at == ("right", "left", "anterior", "posterior")
    empty = measure_labels(_volume(LPS), labels, [4], ["volume"])[4]
    assert (empty.is_empty, empty.truncated) == (True, False)


def test_lesions_carry_it_too():
    mask = np.zeros(SHAPE, bool)
    mask[2:4, 2:4, 2:4] = True
    mask[2:4, 2:4, 7] = True  # smaller, in the last column: on RAS the patient's right
    lesions = find_lesions(_volume(RAS), mask, requested=["volume"])
    assert [lesion.measurements.truncated_at for lesion in lesions] == [(), ("right",)]
