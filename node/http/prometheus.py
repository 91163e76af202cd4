"""``/metrics`` in the Prometheus text exposition format (version 0.0.4), written by hand.

Queue sizes, jobs and stage durations are derived from the job store at scrape time, so they
survive restarts and agree with the API; the process's live counters (associations, bytes
received, send attempts) come from :mod:`node.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from node import __version__
from node.http.api import GPU_PROVIDERS, JOB_STATES, OUTBOX_STATES, Node, model_provider
from node.metrics import COUNTERS, COUNTERS_REGISTRY
from node.pipeline import STAGES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
HISTOGRAM_JOBS = 100_000  # stage histograms cover at most this many of the latest done jobs


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    items = labels.items() if isinstance(labels, Mapping) else labels
    text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in items)
    return "{" + text + "}" if text else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float,
               labels: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        self.lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_metrics(node: Node) -> str:
    w = _Writer()
    w.family("radnode_info", "gauge", "The node's version and AE title (value always 1).")
    w.sample("radnode_info", 1, {"version": __version__, "ae_title": node.ae_title})
    w.family("radnode_start_time_seconds", "gauge", "When this process started (Unix time).")
    w.sample("radnode_start_time_seconds", round(node.started_at, 3))

    snapshot = COUNTERS_REGISTRY.snapshot()
    for name, help_text in COUNTERS.items():
        w.family(name, "counter", help_text)
        series = snapshot.get(name) or {}
        if name == "radnode_associations_total":
            for result in ("accepted", "rejected"):
                series.setdefault((("result", result),), 0.0)
        if name == "radnode_send_objects_total":
            for outcome in ("sent", "failed", "dead"):
                series.setdefault((("outcome", outcome),), 0.0)
        if not series:
            series = {(): 0.0}
        for labels, value in sorted(series.items()):
            w.sample(name, value, labels)

    store = node.store
    w.family("radnode_instances_stored", "gauge", "Instances recorded in the job store.")
    w.sample("radnode_instances_stored", store.count_instances())
    all_series = store.all_series()
    w.family("radnode_series", "gauge", "Series in the job store, by state.")
    for state in ("receiving", "complete"):
        w.sample("radnode_series", sum(1 for s in all_series if s.state == state),
                 {"state": state})

    jobs = store.jobs(limit=HISTOGRAM_JOBS)
    by_state_model: dict[tuple[str, str], int] = {}
    for job in jobs:
        by_state_model[(job.state, job.model)] = by_state_model.get((job.state, job.model), 0) + 1
    models = sorted(set(node.packages) | {job.model for job in jobs})
    w.family("radnode_jobs", "gauge", "Jobs in the job store, by state and model.")
    for model in models:
        for state in JOB_STATES:
            w.sample("radnode_jobs", by_state_model.get((state, model), 0),
                     {"state": state, "model": model})

    w.family("radnode_job_stage_duration_seconds", "histogram",
             "Duration of each pipeline stage of done jobs, by stage and model.")
    for model in models:
        done = [j.timings for j in jobs if j.model == model and j.state == "done"]
        for stage in STAGES:
            values = [t[stage] for t in done if stage in t]
            _histogram(w, "radnode_job_stage_duration_seconds", values,
                       {"stage": stage, "model": model})

    outbox = store.count_outbox()
    w.family("radnode_outbox_items", "gauge", "Result objects in the outbox, by state.")
    for state in OUTBOX_STATES:
        w.sample("radnode_outbox_items", outbox.get(state, 0), {"state": state})

    w.family("radnode_spool_free_bytes", "gauge", "Free space of the spool's file system.")
    w.sample("radnode_spool_free_bytes", node.free_bytes())

    providers = []
    for name, package in sorted(node.packages.items()):
        provider = model_provider(node, package)
        if provider is not None:
            providers.append((name, package.version, provider))
    w.family("radnode_model_provider", "gauge",
             "1 for the ONNX Runtime provider that runs each loaded model.")
    for name, version, provider in providers:
        w.sample("radnode_model_provider", 1,
                 {"model": name, "version": version, "provider": provider})
    w.family("radnode_model_on_gpu", "gauge",
             "1 when a model runs on a GPU provider (CUDA, TensorRT), 0 on the CPU.")
    for name, _version, provider in providers:
        w.sample("radnode_model_on_gpu", int(provider in GPU_PROVIDERS), {"model": name})

    ready_listener = node.listener_port() is not None
    w.family("radnode_listener_up", "gauge", "1 while the DICOM listener accepts associations.")
    w.sample("radnode_listener_up", int(ready_listener))
    return w.text()


def _histogram(w: _Writer, name: str, values: list[float], labels: dict[str, str]) -> None:
    for bound in BUCKETS:
        w.sample(f"{name}_bucket", sum(1 for v in values if v <= bound),
                 {**labels, "le": _number(bound)})
    w.sample(f"{name}_bucket", len(values), {**labels, "le": "+Inf"})
    w.sample(f"{name}_sum", round(sum(values), 6), labels)
    w.sample(f"{name}_count", len(values), labels)
