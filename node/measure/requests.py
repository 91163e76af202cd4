"""What a model manifest may ask to measure, parsed once into typed requests.

A manifest lists measurements as small tables, for example::

    measurements = [
      { kind = "volume" },
      { kind = "mean" },
      { kind = "fraction_below", threshold = -950, name = "LAA-950" },
      { kind = "percentile", q = 15 },
    ]

Volume, voxel count, centroid and bounding box are always computed (they are cheap and every
report needs them); listing them is allowed and changes nothing. Parsing rejects unknown kinds,
missing or unexpected parameters and duplicate names, so a bad manifest fails at
``models check`` rather than in the middle of a job.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Always computed; accepted in a manifest for readability.
ALWAYS = frozenset({"volume", "voxel_count", "centroid", "bbox"})
# Intensity statistics over the region, in the source volume's units (HU for CT).
STATISTICS = frozenset({"mean", "std", "min", "max"})
# Shape measurements that cost more than a count.
SHAPE = frozenset({"max_diameter"})
# Parametric measurements: kind -> its one required parameter.
PARAMETRIC = {"fraction_below": "threshold", "fraction_above": "threshold", "percentile": "q"}
# The region's volume as a percentage of a named reference region (``of``, e.g. the intracranial
# volume), given to the measurement by the caller.
RELATIVE = frozenset({"volume_percent"})

KINDS = ALWAYS | STATISTICS | SHAPE | frozenset(PARAMETRIC) | RELATIVE


@dataclass(frozen=True)
class MeasurementRequest:
    """One measurement asked for: its kind, the name it is reported under, and its parameter.

    ``fraction_below``/``fraction_above`` give the *percentage* (0-100) of region voxels strictly
    below/above ``threshold``; ``percentile`` gives the q-th percentile (0-100) of the intensities;
    ``volume_percent`` the region's volume as a percentage of the reference region ``of``.
    """

    kind: str
    name: str = ""
    threshold: float | None = None
    q: float | None = None
    of: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown measurement kind {self.kind!r}; known: {sorted(KINDS)}")
        needed = PARAMETRIC.get(self.kind)
        for param in ("threshold", "q"):
            value = getattr(self, param)
            if param == needed:
                if value is None:
                    raise ValueError(f"measurement {self.kind!r} needs {param!r}")
                value = float(value)
                if not math.isfinite(value):
                    raise ValueError(f"measurement {self.kind!r}: {param} must be finite")
                object.__setattr__(self, param, value)
            elif value is not None:
                raise ValueError(f"measurement {self.kind!r} takes no {param!r}")
        if (self.kind in RELATIVE) != (self.of is not None):
            raise ValueError(f"measurement {self.kind!r}: 'of' names the reference region of "
                             "volume_percent and nothing else")
        if self.kind == "percentile" and not 0.0 <= self.q <= 100.0:  # type: ignore[operator]
            raise ValueError(f"percentile q must be within 0..100; got {self.q}")
        if not self.name:
            object.__setattr__(self, "name", self._default_name())

    def _default_name(self) -> str:
        if self.threshold is not None:
            return f"{self.kind}_{self.threshold:g}"
        if self.q is not None:
            return f"percentile_{self.q:g}"
        if self.of is not None:
            return f"percent_of_{self.of}"
        return self.kind


RequestLike = MeasurementRequest | Mapping[str, object] | str


def declared_requests(
    declared: Iterable[Mapping[str, object]],
) -> tuple[MeasurementRequest, ...]:
    """A model manifest's ``[[measurements]]`` tables as requests. Their optional ``labels``
    key says which labels a measurement applies to; it is not part of the request."""
    return parse_requests({k: v for k, v in m.items() if k != "labels"} for m in declared)


def parse_requests(items: Iterable[RequestLike]) -> tuple[MeasurementRequest, ...]:
    """Manifest entries (tables, bare kind names, or requests) to validated requests."""
    out: list[MeasurementRequest] = []
    for item in items:
        if isinstance(item, MeasurementRequest):
            out.append(item)
        elif isinstance(item, str):
            out.append(MeasurementRequest(kind=item))
        elif isinstance(item, Mapping):
            unknown = set(item) - {"kind", "name", "threshold", "q", "of"}
            if unknown:
                raise ValueError(f"measurement {dict(item)!r}: unknown keys {sorted(unknown)}")
            if "kind" not in item:
                raise ValueError(f"measurement {dict(item)!r} has no 'kind'")
            out.append(MeasurementRequest(**item))  # type: ignore[arg-type]
        else:
            raise TypeError(f"a measurement is a table or a kind name; got {type(item).__name__}")
    names = [r.name for r in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"measurement names must be unique; repeated: {dupes}")
    return tuple(out)


# What measure_labels/lesion detection compute when the manifest says nothing.
DEFAULT_REQUESTS: tuple[MeasurementRequest, ...] = parse_requests(
    ["mean", "std", "min", "max", "max_diameter"]
)
