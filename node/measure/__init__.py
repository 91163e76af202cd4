"""Measurements of model outputs: regions, label maps, lesions and class probabilities.

Everything returns frozen dataclasses (node.measure.results) with Python floats and LPS points,
ready for the SR writer and for JSON via ``to_dict()``.
"""

from node.measure.classes import class_probabilities
from node.measure.lesions import find_lesions, find_lesions_in_probability, min_voxels_for
from node.measure.region import measure_labels, measure_region
from node.measure.requests import (
    DEFAULT_REQUESTS,
    MeasurementRequest,
    declared_requests,
    parse_requests,
)
from node.measure.results import (
    ClassProbability,
    DerivedValue,
    Lesion,
    RegionMeasurements,
    intensity_unit,
)

__all__ = [
    "DEFAULT_REQUESTS",
    "ClassProbability",
    "DerivedValue",
    "Lesion",
    "MeasurementRequest",
    "RegionMeasurements",
    "class_probabilities",
    "declared_requests",
    "find_lesions",
    "find_lesions_in_probability",
    "intensity_unit",
    "measure_labels",
    "measure_region",
    "min_voxels_for",
    "parse_requests",
]
