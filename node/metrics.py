"""Live counters of this process (associations, bytes received, send attempts), thread-safe.

Most metrics are derived from the job store when ``/metrics`` is scraped (node/http/prometheus.py);
only what the store does not keep is counted here, by the receiver and the sender. Counters
start at zero with the process, as Prometheus expects of a ``_total`` counter.
"""

from __future__ import annotations

import threading
from typing import Any

LabelSet = tuple[tuple[str, str], ...]

# name -> help text; only these names may be counted (a typo fails loudly, not silently).
COUNTERS = {
    "radnode_associations_total":
        "DICOM associations requested of the listener, by result (accepted, rejected).",
    "radnode_instances_received_total":
        "Instances stored and recorded by this process (duplicates not counted).",
    "radnode_bytes_received_total": "Bytes of the instances stored by this process.",
    "radnode_send_connections_total": "Associations opened or HTTP requests made by the sender.",
    "radnode_send_objects_total":
        "Result objects the sender tried, by outcome (sent, failed = will retry, dead).",
    "radnode_send_destination_failures_total":
        "Send rounds in which a destination as a whole failed (refused, unreachable...).",
}


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[LabelSet, float]] = {name: {} for name in COUNTERS}

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        if name not in COUNTERS:
            raise KeyError(f"unknown counter {name!r}")
        if value < 0:
            raise ValueError("a counter only goes up")
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._values[name]
            series[key] = series.get(key, 0.0) + value

    def snapshot(self) -> dict[str, dict[LabelSet, float]]:
        with self._lock:
            return {name: dict(series) for name, series in self._values.items()}

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values[name].get(tuple(sorted(labels.items())), 0.0)


COUNTERS_REGISTRY = Counters()


def inc(name: str, value: float = 1.0, **labels: str) -> None:
    """Count in the process-wide registry."""
    COUNTERS_REGISTRY.inc(name, value, **labels)


def count_send_round(summary: Any) -> None:
    """One sender round (a ``node.sender.outbox.RoundSummary``)."""
    if summary.connections:
        inc("radnode_send_connections_total", summary.connections)
    for outcome, n in (("sent", summary.sent), ("failed", summary.failed),
                       ("dead", summary.dead)):
        if n:
            inc("radnode_send_objects_total", n, outcome=outcome)
    if summary.destination_errors:
        inc("radnode_send_destination_failures_total", len(summary.destination_errors))
