"""The cached IOD look-up answers exactly as highdicom's own."""

from __future__ import annotations

import pytest
from highdicom import _standard_utils

import node.results  # noqa: F401  (installs the cache)
from node.results import iod_cache

CASES = [
    ("NumberOfFrames", "1.2.840.10008.5.1.4.1.1.2", None),  # CT: single-frame IOD
    ("NumberOfFrames", "1.2.840.10008.5.1.4.1.1.2.1", None),  # Enhanced CT
    ("NumberOfFrames", "1.2.840.10008.5.1.4.1.1.66.4", None),  # SEG
    ("ContentDate", "1.2.840.10008.5.1.4.1.1.88.34", None),  # Comprehensive 3D SR
    ("PatientName", "1.2.840.10008.5.1.4.1.1.4", ["ReferencedPatientSequence"]),
]


@pytest.mark.parametrize(("attribute", "sop_class", "exclude"), CASES)
def test_cached_answer_equals_highdicom(attribute, sop_class, exclude) -> None:
    assert _standard_utils.is_attribute_in_iod is iod_cache.is_attribute_in_iod
    expected = iod_cache._original(attribute, sop_class, exclude)
    assert iod_cache.is_attribute_in_iod(attribute, sop_class, exclude) == expected
    assert iod_cache.is_attribute_in_iod(attribute, sop_class, exclude) == expected  # cached
    assert _standard_utils.is_multiframe_image.__module__ == _standard_utils.__name__
