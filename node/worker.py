"""Workers: take queued jobs from the job store and run the pipeline on them.

A job is claimed (queued -> running) in one transaction, so two workers never run the same job;
one that a crash left running is queued again at start-up (``JobStore.recover_jobs``). The
outcome, the per-stage timings and a JSON summary are recorded with the job.

Every job runs under a :class:`node.jobcontrol.JobControl`: a time limit and the process's
memory budget (checked by one monitor thread), cancel, and shutdown each stop it and cost that
job alone: it fails with the reason (time, memory), becomes cancelled, or, when the node stops,
goes back to the queue without counting as an attempt; the worker takes the next job.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from node.errors import NodeError
from node.imaging.series import DEFAULT_MAX_VOXELS
from node.inference.manifest import ModelPackage
from node.inference.preprocess import DEFAULT_MAX_GRID_VOXELS
from node.inference.runtime import SessionRegistry
from node.jobcontrol import (
    CANCELLED,
    NODE_STOPPING,
    JobControl,
    JobMonitor,
    JobStoppedError,
    StopKind,
    StopReason,
)
from node.log import job_context
from node.pipeline import PipelineResult, run_pipeline
from node.results.objects import ResultSettings
from node.store import JobRow, JobState, JobStore, NewOutboxItem

log = logging.getLogger("radnode.worker")

# What a finished job hands to the sender: each result object, to each destination.
OutboxItems = list[NewOutboxItem]
ResultHook = Callable[[JobRow, PipelineResult], OutboxItems]

DEFAULT_JOB_TIMEOUT_S = 1800.0  # workers.job_timeout_s: ~36x the slowest model job measured
STOP_TIMEOUT_S = 10.0  # how long Workers.stop waits for stopped jobs before giving up on them
CANCEL_WAIT_S = 5.0  # how long Workers.cancel waits for a running job to end


class JobFailedError(NodeError):
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
        max_grid_voxels: int = DEFAULT_MAX_GRID_VOXELS,
        job_timeout_s: float = DEFAULT_JOB_TIMEOUT_S,
        memory_budget_mb: int | None = None,
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
        self.max_grid_voxels = max_grid_voxels  # and series that would make larger grids
        self.job_timeout_s = job_timeout_s  # 0: no time limit
        # the process's resident memory above which the running job is stopped (None: none)
        self.monitor = JobMonitor(memory_budget_mb)
        self._claim_lock = threading.Lock()  # a claimed job is registered before cancel sees it
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    def results_dir(self, job: JobRow) -> Path:
        """Where a job's files go: the same folder for every run of the same job."""
        return self.results_root / job.series_uid / f"{job.model}-g{job.generation}"

    def run_one(self) -> JobRow | None:
        """Claim the oldest queued job and run it; None when nothing is queued (or stopping)."""
        with self._claim_lock:
            if self._stop.is_set():
                return None
            job = self.store.claim_job()
            if job is None:
                return None
            control = JobControl(job.id, self.job_timeout_s or None)
            self.monitor.add(control)  # its deadline and the memory budget are watched
        try:
            with job_context(job.id, job.series_uid):  # every log line of the job names it
                return self._run_claimed(job, control)
        finally:
            control.finished.set()
            self.monitor.remove(control)

    def _run_claimed(self, job: JobRow, control: JobControl) -> JobRow | None:
        log.info("job %d: %s on series %s (attempt %d)", job.id, job.model, job.series_uid,
                 job.attempts)
        try:
            with control.active():  # the pipeline's checkpoints and ONNX runs see the control
                result = self._run(job)
            outbox = self.on_result(job, result) if self.on_result else []
        except Exception as exc:
            # a stopped job's ONNX run or step may end with any error: the stop is the reason
            stop = exc.reason if isinstance(exc, JobStoppedError) else control.reason
            if stop is not None:
                self._record_stop(job, control, stop)
            elif isinstance(exc, NodeError):  # the node's own: the message is the reason
                reason = str(exc)
                log.warning("job %d failed: %s", job.id, reason)
                self.store.finish_job(job.id, JobState.FAILED, error=reason)
            else:
                text = str(exc).splitlines()[0][:300] if str(exc) else ""
                log.exception("job %d failed unexpectedly", job.id)
                self.store.finish_job(job.id, JobState.FAILED,
                                      error=f"{type(exc).__name__}: {text}")
        else:  # finished: a stop that came after the last step changes nothing
            self.store.finish_job(job.id, JobState.DONE, timings=result.timings,
                                  result=result.summary(), outbox=outbox)
            log.info("job %d done in %.2f s: %s", job.id, sum(result.timings.values()),
                     ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()))
        if self.on_finished is not None:
            self.on_finished()
        return self.store.job(job.id)

    def _record_stop(self, job: JobRow, control: JobControl, stop: StopReason) -> None:
        took = time.monotonic() - (control.stopped_at or time.monotonic())
        if stop.kind == StopKind.NODE_STOPPING:  # not the job's fault: not an attempt either
            self.store.requeue_job(job.id)
            log.info("job %d: queued again (node stopping; stopped in %.2f s)", job.id, took)
            return
        if stop.kind == StopKind.CANCELLED:
            self.store.finish_job(job.id, JobState.CANCELLED, error=stop.text)
        else:
            self.store.finish_job(job.id, JobState.FAILED, error=stop.text)
        log.warning("job %d %s: %s (stopped in %.2f s)", job.id,
                    "cancelled" if stop.kind == StopKind.CANCELLED else "failed", stop.text, took)
        if stop.kind == StopKind.MEMORY:
            release_memory()  # so the next job does not start over the budget

    def cancel(self, job_id: int, wait_s: float = CANCEL_WAIT_S) -> bool:
        """Cancel a job: a queued one is taken off the queue; a running one is stopped (its
        ONNX run ends at once, other steps at the next checkpoint) and recorded as cancelled,
        waiting up to ``wait_s`` for that. False when the job is neither queued nor running
        here (or was already being stopped for another reason)."""
        with self._claim_lock:
            if self.store.cancel_job(job_id):
                log.info("job %d: cancelled while queued", job_id)
                return True
            control = self.monitor.get(job_id)
        if control is None or not control.stop(CANCELLED):
            return False
        control.finished.wait(wait_s)
        return True

    def _run(self, job: JobRow) -> PipelineResult:
        package = self.packages.get(job.model)
        if package is None:
            raise JobFailedError(f"model {job.model!r} is not installed")
        paths = [self.spool_root / p for p in self.store.instance_paths(job.series_uid)]
        if not paths:
            raise JobFailedError("the series has no stored instances")
        settings = self.result_settings(job) if self.result_settings else None
        return run_pipeline(paths, package, self.results_dir(job), registry=self.registry,
                            results=settings, max_voxels=self.max_voxels,
                            max_grid_voxels=self.max_grid_voxels)

    # -- threads ---------------------------------------------------------------------------

    def start(self) -> None:
        for n in range(self.concurrency):
            thread = threading.Thread(target=self._loop, name=f"worker-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        self._wake.set()

    def stop_jobs(self) -> None:
        """Take no more jobs and stop the running ones (they go back to the queue); returns at
        once: :meth:`stop` waits for them."""
        with self._claim_lock:
            self._stop.set()
        self._wake.set()
        for control in self.monitor.running():
            control.stop(NODE_STOPPING)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the running jobs and the threads within ``timeout`` seconds, so shutting down
        never waits long on a job; a job that has not ended by then is left to its daemon
        thread. If it is inside an ONNX run (one long kernel: ONNX Runtime checks the stop
        between kernels) it is queued again without counting the attempt. Otherwise (a long
        step outside ONNX) it stays ``running`` in the store and the next start queues it
        again as an interrupted attempt, as after a crash, so a job that never stops is not
        retried forever (``workers.max_attempts``)."""
        deadline = time.monotonic() + timeout
        self.stop_jobs()
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for control in self.monitor.running():
            if control.finished.is_set():
                continue
            if control.in_onnx_run and self.store.requeue_job(control.job_id):
                log.warning("job %d did not stop within %.0f s (inside one ONNX kernel); "
                            "queued again", control.job_id, timeout)
            else:
                log.warning("job %d did not stop within %.0f s; left running (the next start "
                            "queues it again, counted as an interrupted attempt)",
                            control.job_id, timeout)
        self.monitor.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.run_one() is not None:
                    continue
            except Exception:
                log.exception("worker loop error; continuing")
            self._wake.wait(1.0)
            self._wake.clear()


def release_memory() -> None:
    """Give freed memory back to the system (glibc keeps it otherwise), so the process's
    resident size, which the memory budget watches, falls once a stopped job's arrays are
    gone."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
