"""The UIDs of one run's result objects, derived from what identifies the run (principle 3)."""

from __future__ import annotations

from typing import NamedTuple

from node.uids import derive_uid


class ResultUids(NamedTuple):
    seg_series: str
    seg_instance: str
    sr_series: str
    sr_instance: str


def result_uids(source_series_uid: str, model: str, version: str, generation: int = 0,
                root: str = "2.25.") -> ResultUids:
    """Same run, same UIDs: a re-run after a crash re-sends the same objects (no duplicates).

    ``generation`` changes them on purpose (e.g. a re-run a user asked for).
    """
    def uid(kind: str) -> str:
        return derive_uid(source_series_uid, model, version, kind, str(generation), root=root)

    return ResultUids(uid("seg-series"), uid("seg"), uid("sr-series"), uid("sr"))
