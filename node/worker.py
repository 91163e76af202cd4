"""Workers: take queued jobs from the job store and run the pipeline on them.

A job is claimed (queued -> running) in one transaction, so two workers never run the same job;
one that a crash left running is queued again at start-up (``JobStore.recover_jobs``). The
outcome, the per-stage timings and a JSON summary are recorded with the job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from node.imaging.errors import VolumeError
from node.imaging.series import DEFAULT_MAX_VOXELS
from node.inference.manifest import ModelPackage
from node.inference.runtime import SessionRegistry
from node.log import job_context
from node.pipeline import PipelineResult, run_pipeline
from node.results.errors import ResultsError
from node.results.objects import ResultSettings
from node.store.jobstore import JobRow, JobState, JobStore

log = logging.getLogger("radnode.worker")

# What a finished job hands to the sender: (destination, path, SOP instance, SOP class).
OutboxItems = list[tuple[str, str, str, str]]
ResultHook = Callable[[JobRow, PipelineResult], OutboxItems]


class JobFailedError(Exception):
    """A job that cannot succeed; the message is recorded as its reason (no patient data)."""


class Workers:
    def __init__(
        self,
        store: JobStore,
        spool_root: Path,
        results_root: Path,
        packages: Mapping[str, ModelPackage],
        registry: SessionRegistry,
        concurrency: int = 1,
        on_result: ResultHook | None = None,
        on_finished: Callable[[], None] | None = None,
        result_settings: Callable[[JobRow], ResultSettings] | None = None,
        max_voxels: int = DEFAULT_MAX_VOXELS,
    ) -> None:
        self.store = store
        self.spool_root = Path(spool_root)
        self.results_root = Path(results_root)
        self.packages = packages
        self.registry = registry
        self.concurrency = concurrency
        self.on_result = on_result
        self.on_finished = on_finished  # after the outcome is committed (wakes the sender)
        self.result_settings = result_settings  # how to write the job's SEG and SR
        self.max_voxels = max_voxels  # larger series are refused before any allocation
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    def results_dir(self, job: JobRow) -> Path:
        """Where a job's files go: the same folder for every run of the same job."""
        return self.results_root / job.series_uid / f"{job.model}-g{job.generation}"

    def run_one(self) -> JobRow | None:
        """Claim the oldest queued job and run it; None when nothing is queued."""
        job = self.store.claim_job()
        if job is None:
            return None
        with job_context(job.id, job.series_uid):  # every log line of the job names it
            return self._run_claimed(job)

    def _run_claimed(self, job: JobRow) -> JobRow | None:
        log.info("job %d: %s on series %s (attempt %d)", job.id, job.model, job.series_uid,
                 job.attempts)
        try:
            result = self._run(job)
            outbox = self.on_result(job, result) if self.on_result else []
        except (JobFailedError, VolumeError, ResultsError) as exc:
            reason = str(exc)
            log.warning("job %d failed: %s", job.id, reason)
            self.store.finish_job(job.id, JobState.FAILED, error=reason)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            log.exception("job %d failed unexpectedly", job.id)
            self.store.finish_job(job.id, JobState.FAILED, error=reason)
        else:
            self.store.finish_job(job.id, JobState.DONE, timings=result.timings,
                                  result=result.summary(), outbox=outbox)
            log.info("job %d done in %.2f s: %s", job.id, sum(result.timings.values()),
                     ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()))
        if self.on_finished is not None:
            self.on_finished()
        return self.store.job(job.id)

    def _run(self, job: JobRow) -> PipelineResult:
        package = self.packages.get(job.model)
        if package is None:
            raise JobFailedError(f"model {job.model!r} is not installed")
        paths = [self.spool_root / p for p in self.store.instance_paths(job.series_uid)]
        if not paths:
            raise JobFailedError("the series has no stored instances")
        settings = self.result_settings(job) if self.result_settings else None
        return run_pipeline(paths, package, self.results_dir(job), registry=self.registry,
                            results=settings, max_voxels=self.max_voxels)

    # -- threads ---------------------------------------------------------------------------

    def start(self) -> None:
        for n in range(self.concurrency):
            thread = threading.Thread(target=self._loop, name=f"worker-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.run_one() is not None:
                    continue
            except Exception:
                log.exception("worker loop error; continuing")
            self._wake.wait(1.0)
            self._wake.clear()
