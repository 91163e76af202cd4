"""Manifest measurement lists: parsing, defaults and the errors a bad manifest gets."""

from __future__ import annotations

import tomllib

import pytest

from node.measure import DEFAULT_REQUESTS, MeasurementRequest, class_probabilities, parse_requests

MANIFEST = """
measurements = [
  { kind = "volume" },
  { kind = "mean" },
  { kind = "fraction_below", threshold = -950, name = "LAA-950" },
  { kind = "percentile", q = 15 },
]
"""


def test_manifest_tables_parse() -> None:
    reqs = parse_requests(tomllib.loads(MANIFEST)["measurements"])
    assert [(r.kind, r.name) for r in reqs] == [
        ("volume", "volume"),
        ("mean", "mean"),
        ("fraction_below", "LAA-950"),
        ("percentile", "percentile_15"),
    ]
    assert reqs[2].threshold == -950.0 and isinstance(reqs[2].threshold, float)
    assert reqs[3].q == 15.0
    assert parse_requests(["max", MeasurementRequest("min")]) == (
        MeasurementRequest("max"),
        MeasurementRequest("min"),
    )
    assert {r.kind for r in DEFAULT_REQUESTS} == {"mean", "std", "min", "max", "max_diameter"}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"kind": "volumes"}, "unknown measurement kind"),
        ({"kind": "fraction_below"}, "needs 'threshold'"),
        ({"kind": "percentile", "q": 150}, "within 0..100"),
        ({"kind": "mean", "threshold": 3}, "takes no 'threshold'"),
        ({"kind": "mean", "units": "HU"}, "unknown keys"),
        ({"name": "x"}, "no 'kind'"),
        ({"kind": "fraction_below", "threshold": float("nan")}, "finite"),
    ],
)
def test_bad_entries_are_rejected(item: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_requests([item])


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="unique"):
        parse_requests([{"kind": "percentile", "q": 15}, {"kind": "percentile", "q": 15.0}])
    with pytest.raises(TypeError):
        parse_requests([42])  # type: ignore[list-item]


def test_class_probabilities() -> None:
    out = class_probabilities(["normal", "nodule"], [0.2, 0.8], thresholds=0.5)
    assert [(c.index, c.name, c.probability, c.present) for c in out] == [
        (0, "normal", 0.2, False),
        (1, "nodule", 0.8, True),
    ]
    assert type(out[0].probability) is float
    assert out[1].to_dict() == {
        "index": 1,
        "name": "nodule",
        "probability": 0.8,
        "threshold": 0.5,
        "present": True,
    }
    plain = class_probabilities(["a"], [1.0000001])
    assert plain[0].probability == 1.0 and plain[0].present is None
    with pytest.raises(ValueError, match="not within"):
        class_probabilities(["a", "b"], [2.3, -1.0])
    with pytest.raises(ValueError, match="2 class names"):
        class_probabilities(["a", "b"], [0.5])
    with pytest.raises(ValueError, match="thresholds"):
        class_probabilities(["a", "b"], [0.5, 0.5], thresholds=[0.5])
