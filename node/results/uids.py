"""The UIDs of one run's result objects, derived from what identifies the run (principle 3).

Each output kind (node.results.kinds) gets its series and instance UID from the source series,
the model, its version, the kind's name and the job's generation.
"""

from __future__ import annotations

from typing import NamedTuple

from node.uids import derive_uid


class KindUids(NamedTuple):
    """One kind's series and instance UIDs."""

    series: str
    instance: str


def kind_uids(kind: str, source_series_uid: str, model: str, version: str,
              generation: int = 0, root: str = "2.25.") -> KindUids:
    """Same run, same UIDs: a re-run after a crash re-sends the same objects (no duplicates).

    The derivation is (source series, model, version, ``<kind>-series`` or ``<kind>``,
    generation), so "seg" and "sr" keep the UIDs the node always wrote. ``generation`` changes
    them on purpose (e.g. a re-run a user asked for).
    """
    def uid(what: str) -> str:
        return derive_uid(source_series_uid, model, version, what, str(generation), root=root)

    return KindUids(uid(f"{kind}-series"), uid(kind))


class ResultUids(NamedTuple):
    seg_series: str
    seg_instance: str
    sr_series: str
    sr_instance: str


def result_uids(source_series_uid: str, model: str, version: str, generation: int = 0,
                root: str = "2.25.") -> ResultUids:
    """The SEG's and SR's UIDs (:func:`kind_uids` of "seg" and "sr")."""
    seg = kind_uids("seg", source_series_uid, model, version, generation, root)
    sr = kind_uids("sr", source_series_uid, model, version, generation, root)
    return ResultUids(seg.series, seg.instance, sr.series, sr.instance)
