"""The sender: moves outbox items to their destinations, with back-off and dead letters.

Every round takes the due items from the job store, groups them by destination (and, for kind
'caller', by the peer that sent the study), and sends each group over one association or a few
HTTP requests. What happens next depends on who failed:

* an object failed (a Failure status, a STOW FailureReason, no accepted context): that item's
  attempt counts; it waits ``initial * 2**(attempts-1)`` seconds (capped) and becomes a dead
  letter after ``max_attempts``; a missing or unreadable file is a dead letter at once;
* the destination failed (refused, rejected, unreachable, HTTP 5xx/401/404...): no item is
  charged; the whole destination waits on its own exponential back-off, so a PACS that rejects
  associations sees one attempt per back-off step, not one per item or per round. After
  ``max_attempts`` failed tries in a row the items that were waiting become dead letters with
  the reason, and the next items start a fresh schedule.

All item state (attempts, next attempt, last error, dead) is in the store, so a restarted node
resumes where it stopped; the destination's failure streak is kept in memory and starts again
from the initial back-off after a restart (postponed items still keep their next attempt time).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID

from node import metrics
from node.config import Config, DestinationConfig
from node.errors import NodeError
from node.sender.common import BatchResult, Outgoing, backoff, client_tls_context
from node.sender.dicom import DicomTarget, send_dicom
from node.sender.stow import StowTarget, send_stow
from node.store import JobStore, NewOutboxItem, OutboxItem

log = logging.getLogger("radnode.sender")

GroupKey = tuple[str, str]  # (destination name, peer AE title for kind 'caller', else "")


class UndeliverableError(NodeError):
    """An item that no destination can take as configured (dead letter with this reason)."""


@dataclass
class RoundSummary:
    """What one :meth:`Sender.run_once` did; the counts are objects unless said otherwise."""

    due: int = 0  # items taken from the outbox this round
    sent: int = 0
    warnings: int = 0  # sent, with a Warning status or WarningReason
    failed: int = 0  # charged an attempt, will be retried
    dead: int = 0
    held: int = 0  # due, but their destination is in back-off
    connections: int = 0  # associations opened or HTTP requests made
    destination_errors: dict[str, str] = field(default_factory=dict)


@dataclass
class _Streak:
    failures: int = 0
    until: float = 0.0
    error: str = ""


@dataclass
class _Group:
    destination: DestinationConfig
    target: DicomTarget | StowTarget | None  # None: built at send time (TLS context)
    peer: tuple[str, str, int] | None = None  # (AE title, host, port) for kind 'caller'
    items: list[OutboxItem] = field(default_factory=list)


class Sender:
    """Background sender over the job store's outbox.

    The service creates one, calls :meth:`start` and :meth:`stop`; whoever queues items (the
    worker, through ``JobStore.finish_job(outbox=...)`` or ``JobStore.enqueue``) may call
    :meth:`wake` to have them sent without waiting for the next poll.
    """

    def __init__(self, config: Config, store: JobStore, data_dir: Path | None = None, *,
                 poll_seconds: float = 1.0, batch_size: int = 500) -> None:
        self.config = config
        self.store = store
        self.data_dir = Path(data_dir) if data_dir is not None else config.data_dir
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self._destinations = {d.name: d for d in config.destinations}
        self._peers = {p.ae_title: p for p in config.peers}
        self._streaks: dict[GroupKey, _Streak] = {}
        self._simulated_clock = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._round_lock = threading.Lock()

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="radnode-sender", daemon=True)
        self._thread.start()
        names = ", ".join(f"{d.name} ({d.kind})" for d in self._destinations.values())
        log.info("sender started; destinations: %s", names or "none")

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the round in progress (a round is bounded by the network timeouts)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                summary = self.run_once()
                if summary.due >= self.batch_size and summary.sent:
                    continue  # a full batch went out: more may be waiting
            except Exception:
                log.exception("sender round failed; trying again in %.0f s", self.poll_seconds)
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def destination_states(self) -> dict[str, dict[str, Any]]:
        """Destinations now in back-off: failures in a row, next try (epoch s), last error."""
        return {
            (name if not peer else f"{name}/{peer}"): {
                "failures": s.failures, "retry_at": s.until, "error": s.error}
            for (name, peer), s in self._streaks.items()
        }

    # -- one round ------------------------------------------------------------------------

    def run_once(self, now: float | None = None) -> RoundSummary:
        """Send what is due at ``now`` (default: the clock); tests pass their own ``now``."""
        with self._round_lock:
            self._simulated_clock = now is not None  # real rounds record the real send time
            summary = self._round(time.time() if now is None else now)
        metrics.count_send_round(summary)
        return summary

    def _round(self, now: float) -> RoundSummary:
        summary = RoundSummary()
        groups: dict[GroupKey, _Group] = {}
        hold: dict[str, _Streak] = {}
        callers: dict[int, str] = {}
        due = self.store.outbox_due(now, self.batch_size)
        summary.due = len(due)
        for item in due:
            try:
                key, group = self._group_for(item, callers)
            except UndeliverableError as exc:
                self.store.mark_failed(item.id, str(exc), now, dead=True)
                summary.dead += 1
                log.error("dead letter: %s to %s: %s", item.sop_instance_uid, item.destination,
                          exc)
                continue
            streak = self._streaks.get(key)
            if streak is not None and streak.until > now:
                summary.held += 1
                if not key[1]:
                    hold[key[0]] = streak
                continue
            groups.setdefault(key, group).items.append(item)
        for name, streak in hold.items():  # items queued while the destination is down
            self.store.postpone_destination(name, streak.until, streak.error)
        if len(groups) > 1:
            with ThreadPoolExecutor(max_workers=min(8, len(groups))) as pool:
                results = list(pool.map(self._send, groups.values()))
        else:
            results = [self._send(g) for g in groups.values()]
        for (key, group), result in zip(groups.items(), results, strict=True):
            self._apply(key, group, result, now, summary)
        return summary

    def _group_for(self, item: OutboxItem, callers: dict[int, str]) -> tuple[GroupKey, _Group]:
        dest = self._destinations.get(item.destination)
        if dest is None:
            raise UndeliverableError(f"destination {item.destination!r} is not configured")
        if dest.kind != "caller":
            return (dest.name, ""), _Group(dest, None)
        if item.job_id is None:
            raise UndeliverableError("kind 'caller' needs the job that made the object; none")
        if item.job_id not in callers:
            job = self.store.job(item.job_id)
            series = self.store.series(job.series_uid) if job is not None else None
            if series is None:
                raise UndeliverableError(f"job {item.job_id} or its series is not in the store")
            callers[item.job_id] = series.calling_ae
        calling_ae = callers[item.job_id]
        if not calling_ae:
            raise UndeliverableError(f"the calling AE of job {item.job_id}'s series is not known")
        peer = self._peers.get(calling_ae)
        if peer is None:
            raise UndeliverableError(
                f"no [[peers]] entry for calling AE {calling_ae!r}: cannot send results back")
        return (dest.name, calling_ae), _Group(dest, None, (peer.ae_title, peer.host, peer.port))

    def _file(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.data_dir / p

    def _send(self, group: _Group) -> BatchResult:
        objects = [Outgoing(i.id, self._file(i.path), i.sop_instance_uid, i.sop_class_uid)
                   for i in group.items]
        dest = group.destination
        timeout = self.config.sender.timeout_seconds
        try:
            tls = None
            if dest.tls or (dest.kind == "stow" and dest.url.startswith("https:")):
                tls = client_tls_context(
                    *(self.config.path(v) if v else None for v in
                      (dest.tls_ca_certificates, dest.tls_certificate, dest.tls_private_key)))
            if dest.kind == "stow":
                group.target = StowTarget(dest.url, dest.token, dest.username, dest.password, tls)
                return send_stow(group.target, objects, timeout=timeout)
            ae, host, port = group.peer or (dest.ae_title, dest.host, dest.port)
            group.target = DicomTarget(ae, host, port, tls)
            return send_dicom(group.target, objects,
                              calling_ae=self.config.sender.calling_ae_title, timeout=timeout)
        except Exception as exc:  # a bug or a bad TLS file must not stop the other destinations
            log.exception("sending to %s failed unexpectedly", dest.name)
            return BatchResult(destination_error=f"sender error: {exc}")

    def _apply(self, key: GroupKey, group: _Group, result: BatchResult, now: float,
               summary: RoundSummary) -> None:
        name = key[0] if not key[1] else f"{key[0]}/{key[1]}"
        sender = self.config.sender
        summary.connections += result.associations
        for item in group.items:
            outcome = result.outcomes.get(item.id)
            if outcome is None:
                continue
            what = f"{item.sop_instance_uid} ({_class_name(item.sop_class_uid)})"
            if outcome.ok:
                self.store.mark_sent(item.id, now if self._simulated_clock else None)
                summary.sent += 1
                if outcome.detail:
                    summary.warnings += 1
                    log.warning("sent %s to %s [%s] with a warning: %s", what, name,
                                group.target, outcome.detail)
                else:
                    log.info("sent %s to %s [%s]", what, name, group.target)
                continue
            attempts = item.attempts + 1
            dead = outcome.permanent or attempts >= sender.max_attempts
            wait = backoff(attempts, sender.initial_backoff_seconds, sender.max_backoff_seconds)
            self.store.mark_failed(item.id, outcome.detail, now + wait, dead)
            if dead:
                summary.dead += 1
                log.error("dead letter: %s to %s after %d attempt(s): %s", what, name, attempts,
                          outcome.detail)
            else:
                summary.failed += 1
                log.warning("send failed: %s to %s (attempt %d of %d, next in %.0f s): %s",
                            what, name, attempts, sender.max_attempts, wait, outcome.detail)
        if result.destination_error:
            self._destination_failed(key, name, group, result, now, summary)
        elif result.associations:
            if key in self._streaks:
                log.info("destination %s is reachable again", name)
            self._streaks.pop(key, None)

    def _destination_failed(self, key: GroupKey, name: str, group: _Group, result: BatchResult,
                            now: float, summary: RoundSummary) -> None:
        sender = self.config.sender
        error = result.destination_error or ""
        streak = self._streaks.setdefault(key, _Streak())
        streak.failures += 1
        wait = backoff(streak.failures, sender.initial_backoff_seconds,
                       sender.max_backoff_seconds)
        streak.until = now + wait
        untried = [i for i in group.items if i.id not in result.outcomes]
        summary.destination_errors[name] = error
        if streak.failures >= sender.max_attempts:
            reason = f"destination {name} failed {streak.failures} tries in a row: {error}"
            for item in untried:
                self.store.mark_failed(item.id, reason, now, dead=True)
            summary.dead += len(untried)
            del self._streaks[key]  # later items get a fresh schedule
            log.error("dead letter: %d object(s) for %s: %s", len(untried), name, reason)
            return
        streak.error = (f"{error} (destination try {streak.failures} of {sender.max_attempts},"
                        f" next in {wait:.0f} s)")
        if not key[1]:
            self.store.postpone_destination(key[0], streak.until, streak.error)
        summary.held += len(untried)
        log.warning("destination %s unavailable: %s; %d object(s) wait %.0f s (try %d of %d)",
                    name, error, len(untried), wait, streak.failures, sender.max_attempts)


def outbox_rows(destinations: Iterable[str], files: Iterable[str | Path],
                data_dir: Path | None = None) -> list[NewOutboxItem]:
    """Outbox items (destination, path, SOP instance, SOP class) for every result file and
    every destination, UIDs read from each file's meta header; paths are stored relative to
    ``data_dir`` when under it (so the data folder can move)."""
    rows: list[NewOutboxItem] = []
    names = list(destinations)
    for file in files:
        meta = read_file_meta_info(file)
        path = Path(file)
        if data_dir is not None and path.is_relative_to(data_dir):
            path = path.relative_to(data_dir)
        rows += [NewOutboxItem(name, str(path), str(meta.MediaStorageSOPInstanceUID),
                               str(meta.MediaStorageSOPClassUID)) for name in names]
    return rows


def _class_name(sop_class_uid: str) -> str:
    """A SOP class's name for logs: pydicom's, else the name an output kind gives it (the
    result kinds' registry knows the classes the node writes, Label Map Segmentation too)."""
    name = UID(sop_class_uid).name
    if name != sop_class_uid:
        return name
    from node.results.kinds import sop_class_name  # here: the sender alone needs no highdicom

    return sop_class_name(sop_class_uid) or "SOP class " + sop_class_uid
