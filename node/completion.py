"""When series and studies are complete, and the routing that follows.

A series is complete after ``series_idle_seconds`` without a new instance; a study when all its
series are complete and it has been idle ``study_idle_seconds``. ``max_wait_seconds`` after it
opened, a series or study is forced complete. Completing a series (or study) and queueing its
jobs happen in one transaction, so a crash never leaves a complete series without its jobs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pydicom

from node.config import CompletionConfig
from node.routing.facts import FACTS_FILE, SeriesFacts, load_header
from node.routing.router import Router
from node.store import JobStore, NewJob, NewStudyJob, SeriesRow, SeriesState

log = logging.getLogger("radnode.completion")


class CompletionScheduler:
    def __init__(
        self, store: JobStore, spool_root: Path, router: Router, config: CompletionConfig,
        on_jobs: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.on_jobs = on_jobs  # told when jobs were queued (wakes the workers)
        self.spool_root = Path(spool_root)
        self.router = router
        self.config = config
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self, now: float | None = None) -> None:
        """One pass: complete what is due and queue the jobs routing asks for."""
        now = time.time() if now is None else now
        cfg = self.config
        forced_studies = {
            s.study_uid for s in self.store.studies_due(now, cfg.study_idle_seconds,
                                                        cfg.max_wait_seconds)
            if s.opened_at <= now - cfg.max_wait_seconds
        }
        for series in self.store.series_due(now, cfg.series_idle_seconds, cfg.max_wait_seconds):
            forced = series.last_received > now - cfg.series_idle_seconds
            self._complete_series(series, forced, now)
        for series in self.store.all_series(SeriesState.RECEIVING):
            if series.study_uid in forced_studies:
                self._complete_series(series, True, now)
        for study in self.store.studies_due(now, cfg.study_idle_seconds, cfg.max_wait_seconds):
            forced = study.opened_at <= now - cfg.max_wait_seconds
            jobs: list[NewStudyJob] = []
            for series in self.store.study_series(study.study_uid):
                facts = self._facts(series)
                if facts is not None:
                    jobs += [NewStudyJob(series.series_uid, r, m)
                             for r, m in self.router.jobs(facts, "study")]
            if self.store.complete_study(study, forced, jobs, now):
                log.info("study %s complete%s; %d study-level jobs", study.study_uid,
                         " (forced by max_wait_seconds)" if forced else "", len(jobs))
                if jobs:
                    self._queued()

    def _complete_series(self, series: SeriesRow, forced: bool, now: float) -> None:
        facts = self._facts(series)
        jobs = ([NewJob(r, m) for r, m in self.router.jobs(facts, "series")]
                if facts is not None else [])
        generation = self.store.complete_series(series, forced, jobs, now)
        if generation is None:
            return
        log.info(
            "series %s complete with %d instances%s; jobs: %s", series.series_uid,
            series.instance_count, " (forced by max_wait_seconds)" if forced else "",
            ", ".join(j.model for j in jobs) or "none",
        )
        if jobs:
            self._queued()

    def _queued(self) -> None:
        if self.on_jobs is not None:
            self.on_jobs()

    def _facts(self, series: SeriesRow) -> SeriesFacts | None:
        """Routing facts from the header the receiver kept for the series (so no instance is
        read, and no deflated one inflated, again); from its first readable instance for a
        series received before headers were kept. None if neither can be read."""
        paths = self.store.instance_paths(series.series_uid)
        if paths:
            folder = (self.spool_root / paths[0]).parent
            header = load_header(folder / FACTS_FILE)
            if header is not None:
                return SeriesFacts(header, instances=len(paths),
                                   calling_ae_title=series.calling_ae)
            log.info("series %s has no kept header; reading an instance for routing",
                     series.series_uid)
        for relative in paths:
            try:
                header = pydicom.dcmread(self.spool_root / relative, stop_before_pixels=True)
            except Exception as exc:
                log.warning("cannot read %s for routing: %s", relative, type(exc).__name__)
                continue
            return SeriesFacts(header, instances=len(paths), calling_ae_title=series.calling_ae)
        log.error("series %s: no readable instance; it is not routed", series.series_uid)
        return None

    # -- background thread -----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="completion", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.config.check_interval_seconds):
            try:
                self.tick()
            except Exception:
                log.exception("completion check failed; retrying")
