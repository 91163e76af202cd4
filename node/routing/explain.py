"""``radnode route --explain``: which rule matched each series of a folder, and why."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pydicom

from node.routing.facts import SeriesFacts
from node.routing.router import Decision, Router


@dataclass
class SeriesExplanation:
    series_uid: str
    description: str
    files: int
    decisions: list[Decision]
    jobs: list[tuple[str, str]]
    refusals: dict[str, str]
    note: str = ""


def explain_folder(folder: Path, router: Router, calling_ae_title: str = "") -> list[
        SeriesExplanation]:
    groups: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        groups[str(ds.get("SeriesInstanceUID", "") or "")].append(ds)
    out = []
    for series_uid, headers in groups.items():
        first = headers[0]
        facts = SeriesFacts(first, instances=len(headers), calling_ae_title=calling_ae_title)
        decisions = router.evaluate(facts)
        jobs = router.jobs(facts, "series") + router.jobs(facts, "study")
        refusals = {m: r for d in decisions if d.outcome.matched for m in d.route.models
                    if (r := router.refusal(m, facts))}
        note = "" if series_uid else (
            "no SeriesInstanceUID: the receiver refuses these instances (status 0xC001)"
        )
        out.append(SeriesExplanation(
            series_uid=series_uid or "(empty)",
            description=f"{first.get('Modality', '?')} "
            f"{first.get('SeriesDescription', '')}".strip(),
            files=len(headers),
            decisions=decisions,
            jobs=jobs,
            refusals=refusals,
            note=note,
        ))
    return out


def format_explanations(items: list[SeriesExplanation]) -> str:
    if not items:
        return "no DICOM files found"
    lines = []
    for item in items:
        lines.append(f"series {item.series_uid}  [{item.description}, {item.files} files]")
        if item.note:
            lines.append(f"  note: {item.note}")
        for d in item.decisions:
            mark = "MATCH" if d.outcome.matched else "no   "
            lines.append(f"  {mark} route {d.route.name!r} (on {d.route.on}) -> "
                         f"{', '.join(d.route.models)}")
            for reason in d.outcome.reasons:
                lines.append(f"        {reason}")
        for model, reason in item.refusals.items():
            lines.append(f"  model {model} does not accept it: {reason}")
        jobs = ", ".join(f"{m} (route {r})" for r, m in item.jobs) or "none"
        lines.append(f"  jobs: {jobs}")
    return "\n".join(lines)
