"""The dashboard at ``/``: one server-rendered HTML page, no build step, no external assets.

It shows the queues, the models and where they run, the recent jobs with their stage timings,
and preview images of the latest finished segmentations. A few lines of JavaScript reload it
every 15 seconds while the tab is visible. Everything shown is already in the JSON API; every
text is HTML-escaped.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any

from node import __version__
from node.http import api
from node.pipeline import STAGES
from node.store import JobState

RECENT_JOBS = 25
PREVIEW_JOBS = 4
STAGE_COLOURS = {"load": "#6c8ebf", "preprocess": "#9673a6", "inference": "#d79b00",
                 "postprocess": "#b85450", "measure": "#82b366", "write": "#7f8c8d"}
STATE_COLOURS = {"queued": "#6c757d", "running": "#0d6efd", "done": "#198754",
                 "failed": "#dc3545", "cancelled": "#adb5bd", "pending": "#0d6efd",
                 "sent": "#198754", "dead": "#dc3545", "receiving": "#0d6efd",
                 "complete": "#198754"}

CSS = """
:root { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
        color: #1f2933; background: #f3f5f8; }
body { margin: 0; }
header { background: #17212b; color: #fff; padding: 14px 28px; display: flex;
         align-items: baseline; gap: 18px; }
header h1 { font-size: 20px; margin: 0; letter-spacing: .5px; }
header .meta { color: #aeb8c4; font-size: 13px; }
header .ready { margin-left: auto; font-size: 13px; padding: 3px 10px; border-radius: 12px; }
main { padding: 18px 28px 40px; max-width: 1400px; }
section { background: #fff; border-radius: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.08);
          padding: 14px 18px; margin-bottom: 18px; }
h2 { font-size: 15px; margin: 0 0 10px; color: #52606d; text-transform: uppercase;
     letter-spacing: .6px; }
.cards { display: flex; gap: 14px; flex-wrap: wrap; }
.card { flex: 1 1 180px; background: #fff; border-radius: 8px; padding: 12px 16px;
        box-shadow: 0 1px 3px rgba(0,0,0,.08); }
.card .label { font-size: 12px; color: #7b8794; text-transform: uppercase; }
.card .value { font-size: 26px; font-weight: 600; margin: 2px 0; }
.card .detail { font-size: 12px; color: #52606d; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th { text-align: left; color: #7b8794; font-weight: 600; border-bottom: 1px solid #e4e7eb;
     padding: 6px 8px; }
td { border-bottom: 1px solid #f0f2f5; padding: 6px 8px; vertical-align: middle; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.uid { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; color: #52606d; }
.badge { display: inline-block; color: #fff; border-radius: 10px; padding: 1px 9px;
         font-size: 12px; }
.bar { display: flex; height: 12px; width: 220px; border-radius: 3px; overflow: hidden;
       background: #eef1f4; }
.bar span { display: block; height: 100%; }
.legend { font-size: 12px; color: #52606d; display: flex; gap: 12px; flex-wrap: wrap;
          margin-top: 8px; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px;
          vertical-align: -1px; margin-right: 4px; }
.error { color: #b42318; }
.previews { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 590px));
            gap: 16px; }
figure { margin: 0; border: 1px solid #e4e7eb; border-radius: 8px; padding: 10px; }
figure .imgs { display: flex; gap: 6px; }
figure img { width: 33%; min-width: 0; border-radius: 4px; background: #000;
             image-rendering: auto; }
figcaption { font-size: 13px; margin-bottom: 8px; }
.muted { color: #7b8794; }
"""

RELOAD_JS = """
setTimeout(function () { if (!document.hidden) { location.reload(); } }, 15000);
"""


def _badge(state: str) -> str:
    colour = STATE_COLOURS.get(state, "#6c757d")
    return f'<span class="badge" style="background:{colour}">{escape(state)}</span>'


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    seconds = max(0.0, now - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def _iso(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""


def _short_uid(uid: str) -> str:
    return uid if len(uid) <= 28 else uid[:12] + "…" + uid[-12:]


def _timing_bar(timings: dict[str, float]) -> str:
    total = sum(timings.values())
    if not timings or total <= 0:
        return '<span class="muted">-</span>'
    parts = []
    for stage in STAGES:
        value = timings.get(stage, 0.0)
        width = 100.0 * value / total
        if width > 0:
            parts.append(f'<span title="{stage} {value:.2f} s" '
                         f'style="width:{width:.2f}%;background:{STAGE_COLOURS[stage]}"></span>')
    return f'<div class="bar">{"".join(parts)}</div>'


def _card(label: str, value: Any, detail: str = "") -> str:
    return (f'<div class="card"><div class="label">{escape(label)}</div>'
            f'<div class="value">{escape(str(value))}</div>'
            f'<div class="detail">{detail}</div></div>')


def _counts(counts: dict[str, int]) -> str:
    return " &middot; ".join(f"{escape(k)} {v}" for k, v in counts.items())


def render_dashboard(node: api.Node) -> str:
    now = time.time()
    ready, checks = api.readiness(node)
    queues = api.queues(node)
    models = api.models(node)["models"]
    jobs = node.store.jobs(limit=RECENT_JOBS)
    free_gb = node.free_bytes() / 1e9

    ready_html = ('<span class="ready" style="background:#198754">ready</span>' if ready else
                  '<span class="ready" style="background:#dc3545">not ready: '
                  + escape(", ".join(k for k, c in checks.items() if not c["ok"])) + "</span>")
    port = checks["listener"]["port"]
    listener = f"{escape(node.ae_title)} on port {port}" if port else "DICOM listener down"

    cards = "".join([
        _card("Instances stored", queues["instances"], f"spool free {free_gb:.1f} GB"),
        _card("Series", sum(queues["series"].values()), _counts(queues["series"])),
        _card("Jobs", sum(queues["jobs"].values()), _counts(queues["jobs"])),
        _card("Outbox", sum(queues["outbox"].values()), _counts(queues["outbox"])),
    ])

    model_rows = []
    for m in models:
        device = m["device"] or "not loaded"
        accepts = m["accepts"]
        model_rows.append(
            f"<tr><td><b>{escape(m['name'])}</b></td><td>{escape(m['version'])}</td>"
            f"<td>{escape(m['kind'])}</td><td>{escape(device)}"
            f" <span class='muted'>{escape(m['provider'] or '')}</span></td>"
            f"<td>{escape(', '.join(accepts['modalities']))}, "
            f"&ge; {accepts['min_slices']} slices</td>"
            f"<td>{_label_legend(m['labels'])}</td></tr>")
    models_html = ("<table><tr><th>model</th><th>version</th><th>kind</th><th>runs on</th>"
                   "<th>accepts</th><th>labels</th></tr>" + "".join(model_rows) + "</table>"
                   if model_rows else '<p class="muted">no models installed</p>')

    job_rows = []
    for job in jobs:
        total = f"{sum(job.timings.values()):.2f} s" if job.timings else "-"
        error = f'<div class="error">{escape(job.error)}</div>' if job.error else ""
        job_rows.append(
            f'<tr id="job-{job.id}"><td class="num"><a href="/api/jobs/{job.id}">{job.id}</a>'
            f"</td><td>{_badge(job.state)}</td><td>{escape(job.model)}</td>"
            f'<td class="uid" title="{escape(job.series_uid)}">'
            f"{escape(_short_uid(job.series_uid))}{error}</td>"
            f'<td title="{_iso(job.created_at)}">{_ago(job.created_at, now)}</td>'
            f"<td>{_timing_bar(job.timings)}</td><td class='num'>{total}</td></tr>")
    stage_legend = "".join(f'<span><span class="swatch" style="background:{c}"></span>'
                           f"{s}</span>" for s, c in STAGE_COLOURS.items())
    jobs_html = ("<table><tr><th>job</th><th>state</th><th>model</th><th>series</th>"
                 "<th>queued</th><th>stages</th><th>total</th></tr>" + "".join(job_rows)
                 + f'</table><div class="legend">{stage_legend}</div>'
                 if job_rows else '<p class="muted">no jobs yet</p>')

    previews_html = _previews(node, models)

    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>radnode</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{CSS}</style></head>
<body>
<header><h1>radnode</h1><span class="meta">{listener} &middot; version {__version__}
&middot; updated {time.strftime("%H:%M:%S", time.localtime(now))}</span>{ready_html}</header>
<main>
<div class="cards" style="margin-bottom:18px">{cards}</div>
<section id="previews"><h2>Latest segmentations</h2>{previews_html}</section>
<section id="jobs"><h2>Recent jobs</h2>{jobs_html}</section>
<section id="models"><h2>Models</h2>{models_html}</section>
<p class="muted" style="font-size:12px">JSON: <a href="/api/jobs">/api/jobs</a>
&middot; <a href="/api/queues">/api/queues</a> &middot; <a href="/api/models">/api/models</a>
&middot; <a href="/api/outbox">/api/outbox</a> &middot; <a href="/metrics">/metrics</a>
&middot; <a href="/ready">/ready</a></p>
</main>
<script>{RELOAD_JS}</script>
</body></html>
"""


def _label_legend(labels: list[dict[str, Any]]) -> str:
    return "".join(
        f'<span style="margin-right:10px"><span class="swatch" style="background:'
        f'rgb({lab["colour"][0]},{lab["colour"][1]},{lab["colour"][2]})"></span>'
        f'{escape(lab["name"])}</span>' for lab in labels)


def _region_caption(name: str, region: dict[str, Any]) -> str:
    """A region's volume, and what the result says against taking it as whole or sure."""
    text = f"{escape(name)} {region['volume_ml']:.0f} ml"
    if region.get("truncated"):
        text += " (cut by the field of view)"
    for flag in region.get("flags") or []:
        text += f" ({escape(str(flag))})"
    return text


def _previews(node: api.Node, models: list[dict[str, Any]]) -> str:
    labels_by_model = {m["name"]: m["labels"] for m in models}
    figures = []
    for job in node.store.jobs(state=JobState.DONE, limit=PREVIEW_JOBS * 4):
        data = api.job_json(job)
        if not data["previews"]:
            continue
        regions = (job.result or {}).get("regions") or {}
        volumes = " &middot; ".join(
            _region_caption(name, r) for name, r in regions.items()
            if isinstance(r, dict) and isinstance(r.get("volume_ml"), int | float))
        images = "".join(f'<img src="{url}" alt="job {job.id} preview {n + 1}" loading="eager">'
                         for n, url in enumerate(data["previews"]))
        figures.append(
            f'<figure id="preview-{job.id}"><figcaption><b>job {job.id}</b> &middot; '
            f"{escape(job.model)} &middot; "
            f'<span class="uid">{escape(_short_uid(job.series_uid))}</span><br>'
            f'<span class="muted">{volumes}</span></figcaption>'
            f'<div class="imgs">{images}</div>'
            f'<div class="legend">{_label_legend(labels_by_model.get(job.model, []))}</div>'
            f"</figure>")
        if len(figures) == PREVIEW_JOBS:
            break
    if not figures:
        return '<p class="muted">no finished segmentation yet</p>'
    return f'<div class="previews">{"".join(figures)}</div>'
