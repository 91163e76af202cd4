"""Job control: every running job has a deadline, a memory budget and a way to be stopped.

A worker makes one :class:`JobControl` per job and runs the pipeline inside
:meth:`JobControl.active`, so the pipeline's :func:`checkpoint` calls and the ONNX Runtime runs
(:func:`run_options`) see it without it being passed down. Stopping a job (time limit, memory
budget, cancel, node stopping) sets the reason, sets ``terminate`` on the ``RunOptions`` of every
ONNX run in flight (the run returns within milliseconds) and makes the next checkpoint raise
:class:`JobStoppedError`. Work between two checkpoints that is not an ONNX run (a resampling, a
write) is not interrupted: the job stops when that step ends.

One :class:`JobMonitor` thread per set of workers checks every running job's deadline and the
process's resident memory (``VmRSS``) a few times a second. The memory is the process's, not a
job's: when it crosses the budget, the job that started last is stopped (with one worker, the
default, that is the job that is running), then, if the memory stays over, the next one.

Outside a worker (``radnode run``) there is no control: checkpoints do nothing and runs get
plain ``RunOptions``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import onnxruntime as ort

from node.errors import NodeError

log = logging.getLogger("radnode.jobcontrol")

MONITOR_INTERVAL_S = 0.25  # how often deadlines and memory are checked
AUTO_MEMORY_FRACTION = 0.75  # workers.max_job_memory_mb = 0: this share of the machine's memory


class StopKind(StrEnum):
    TIME = "time"
    MEMORY = "memory"
    CANCELLED = "cancelled"
    NODE_STOPPING = "node_stopping"  # not the job's fault: it is queued again


@dataclass(frozen=True)
class StopReason:
    kind: StopKind
    text: str  # recorded as the job's reason (no patient data)


CANCELLED = StopReason(StopKind.CANCELLED, "cancelled")
NODE_STOPPING = StopReason(StopKind.NODE_STOPPING, "node stopping")


def time_limit_reason(limit_s: float) -> StopReason:
    return StopReason(StopKind.TIME, f"time limit of {limit_s:g} s exceeded")


def memory_reason(budget_mb: int, rss_mb: float) -> StopReason:
    return StopReason(StopKind.MEMORY, f"memory budget of {budget_mb} MB exceeded "
                                       f"(process at {rss_mb:.0f} MB)")


class JobStoppedError(NodeError):
    """The running job was stopped; ``reason`` says why (and whether it is the job's fault)."""

    def __init__(self, reason: StopReason) -> None:
        super().__init__(reason.text)
        self.reason = reason


class JobControl:
    """One job's deadline, stop reason and the ONNX runs in flight; thread-safe."""

    def __init__(self, job_id: int, time_limit_s: float | None = None) -> None:
        self.job_id = job_id
        self.time_limit_s = time_limit_s
        self.started = time.monotonic()
        self.deadline = self.started + time_limit_s if time_limit_s else None
        self._lock = threading.Lock()
        self._reason: StopReason | None = None
        self._runs: set[ort.RunOptions] = set()
        self._stopped_at: float | None = None
        self.finished = threading.Event()  # set by the worker once the job's row is written

    @property
    def reason(self) -> StopReason | None:
        return self._reason

    @property
    def stopped_at(self) -> float | None:
        """``time.monotonic()`` of the stop, for measuring how long stopping takes."""
        return self._stopped_at

    @property
    def in_onnx_run(self) -> bool:
        """True while an ONNX run of the job is in flight (a stopped run ends at its next
        kernel; one kernel of a large 3D model can take seconds on a CPU)."""
        with self._lock:
            return bool(self._runs)

    def stop(self, reason: StopReason) -> bool:
        """Stop the job (the first reason wins); False when it was already stopped."""
        with self._lock:
            if self._reason is not None:
                return False
            self._reason = reason
            self._stopped_at = time.monotonic()
            runs = list(self._runs)
        for options in runs:
            options.terminate = True
        log.info("job %d: stopping: %s", self.job_id, reason.text)
        return True

    def checkpoint(self) -> None:
        """Raise :class:`JobStoppedError` when the job was stopped (called between steps)."""
        reason = self._reason
        if reason is not None:
            raise JobStoppedError(reason)

    @contextlib.contextmanager
    def run_options(self) -> Iterator[ort.RunOptions]:
        """Fresh ``RunOptions`` for one ONNX run, terminated if the job is stopped meanwhile."""
        options = _quiet_options()
        with self._lock:
            if self._reason is not None:
                raise JobStoppedError(self._reason)
            self._runs.add(options)
        try:
            yield options
        finally:
            with self._lock:
                self._runs.discard(options)

    @contextlib.contextmanager
    def active(self) -> Iterator[JobControl]:
        """Make this the current job's control for the code run inside (this thread)."""
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)


_current: contextvars.ContextVar[JobControl | None] = contextvars.ContextVar(
    "radnode_job_control", default=None)


def current_job_control() -> JobControl | None:
    """The control of the job this thread runs, or None (``radnode run``, tests)."""
    return _current.get()


def checkpoint() -> None:
    """Between pipeline steps: raise :class:`JobStoppedError` if the current job was stopped."""
    control = _current.get()
    if control is not None:
        control.checkpoint()


@contextlib.contextmanager
def run_options() -> Iterator[ort.RunOptions]:
    """``RunOptions`` for one ONNX run: the current job's (stoppable), or plain ones."""
    control = _current.get()
    if control is None:
        yield _quiet_options()
        return
    with control.run_options() as options:
        yield options


def _quiet_options() -> ort.RunOptions:
    options = ort.RunOptions()
    options.log_severity_level = 4  # a terminated run is expected: no error line on stderr
    return options


# -- memory -----------------------------------------------------------------------------------

def process_rss_mb() -> float | None:
    """This process's resident memory (``VmRSS``) in MB; None where /proc is not available."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def machine_memory_mb() -> int | None:
    """The memory this process may use: the machine's (``MemTotal``) or its cgroup's limit,
    whichever is smaller; None when neither can be read."""
    sizes: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                sizes.append(int(line.split()[1]) // 1024)
    except (OSError, ValueError):
        pass
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 2**60:
            sizes.append(int(raw) // 2**20)
    return min(sizes) if sizes else None


def memory_budget_mb(setting: int) -> int | None:
    """``workers.max_job_memory_mb`` made concrete: the setting, or (0) three quarters of the
    machine's memory; None when unknown (no budget is enforced)."""
    if setting > 0:
        return setting
    total = machine_memory_mb()
    return int(total * AUTO_MEMORY_FRACTION) if total else None


# -- the monitor ------------------------------------------------------------------------------

class JobMonitor:
    """A thread that stops running jobs past their deadline, or when the process's memory goes
    over the budget; it runs only while jobs run."""

    def __init__(self, memory_budget_mb: int | None,
                 read_rss_mb: Callable[[], float | None] = process_rss_mb,
                 interval_s: float = MONITOR_INTERVAL_S) -> None:
        self.memory_budget_mb = memory_budget_mb
        self.read_rss_mb = read_rss_mb
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._jobs: dict[int, JobControl] = {}
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, control: JobControl) -> None:
        with self._lock:
            self._jobs[control.job_id] = control
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._loop, name="job-monitor",
                                                daemon=True)
                self._thread.start()
            self._wake.notify()

    def remove(self, control: JobControl) -> None:
        with self._lock:
            if self._jobs.get(control.job_id) is control:
                del self._jobs[control.job_id]

    def get(self, job_id: int) -> JobControl | None:
        with self._lock:
            return self._jobs.get(job_id)

    def running(self) -> list[JobControl]:
        with self._lock:
            return list(self._jobs.values())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    def check(self, now: float | None = None) -> None:
        """One round: deadlines first, then the memory budget."""
        now = time.monotonic() if now is None else now
        jobs = self.running()
        for control in jobs:
            if control.deadline is not None and now >= control.deadline:
                control.stop(time_limit_reason(control.time_limit_s or 0))
        if self.memory_budget_mb is None or not jobs:
            return
        rss = self.read_rss_mb()
        if rss is None or rss <= self.memory_budget_mb:
            return
        if any(c.reason is not None and c.reason.kind == StopKind.MEMORY and not c.finished.is_set()
               for c in jobs):
            return  # a job stopped for memory is still giving it back: wait for it
        live = [c for c in jobs if c.reason is None]
        if live:
            youngest = max(live, key=lambda c: c.started)
            log.warning("process memory %.0f MB is over workers.max_job_memory_mb = %d MB",
                        rss, self.memory_budget_mb)
            youngest.stop(memory_reason(self.memory_budget_mb, rss))

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._jobs and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
            try:
                self.check()
            except Exception:  # the monitor must outlive any surprise
                log.exception("job monitor error; continuing")
            time.sleep(self.interval_s)
