"""The service: receiver, completion scheduler, workers (and the sender), in one process.

SIGTERM (or SIGINT) stops the node within :data:`SHUTDOWN_TIMEOUT_S`: running jobs are stopped
at once and go back to the queue (not counted as failures or attempts), intake stops, and each
part gets what is left of that time.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
import time

from node.completion import CompletionScheduler
from node.config import Config
from node.errors import StartupError
from node.http import HttpServer
from node.http.api import Node
from node.inference.check import check_models
from node.inference.manifest import ModelPackage, load_packages
from node.inference.runtime import SessionRegistry
from node.jobcontrol import memory_budget_mb
from node.pipeline import PipelineResult
from node.receiver.recovery import recover_spool
from node.receiver.scp import StorageSCP
from node.receiver.spool import Spool
from node.results.objects import ResultSettings
from node.results.templates import template_check
from node.routing.router import Router
from node.sender import Sender, outbox_rows
from node.store import JobRow, JobStore, open_store
from node.worker import OutboxItems, Workers

log = logging.getLogger("radnode.service")

SHUTDOWN_TIMEOUT_S = 15.0  # SIGTERM to exit, at most
WORKERS_STOP_S = 10.0  # of which the workers' stopped jobs may take this much


def load_models(config: Config) -> dict[str, ModelPackage]:
    """Every model package, checked against its ONNX graph; routed models must exist."""
    models_dir = config.path(config.workers.models_dir)
    templates = config.path(config.results.sr_templates_dir)
    problems = check_models(models_dir, template_check(templates)) if models_dir.is_dir() else []
    if problems:
        raise StartupError("invalid model packages:\n  " + "\n  ".join(map(str, problems)))
    packages = load_packages(models_dir) if models_dir.is_dir() else {}
    for i, route in enumerate(config.routes):
        for model in route.models:
            if model not in packages:
                raise StartupError(
                    f"routes[{i}].models: model {model!r} is not installed in {models_dir}"
                )
    return packages


class Service:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.packages = load_models(config)
        data = config.data_dir
        data.mkdir(parents=True, exist_ok=True)
        self.store: JobStore = open_store(config)
        self.spool = Spool(data / "spool", fsync=config.storage.fsync)
        self.router = Router(
            config.routes, {name: p.manifest.accepts for name, p in self.packages.items()}
        )
        self.registry = SessionRegistry(config.runtime)
        self.sender = Sender(config, self.store)
        self.workers = Workers(
            self.store, self.spool.root, data / "results", self.packages, self.registry,
            concurrency=config.workers.concurrency, on_result=self._outbox_rows,
            on_finished=self.sender.wake, result_settings=self._result_settings,
            max_voxels=config.workers.max_voxels, max_grid_voxels=config.workers.max_grid_voxels,
            job_timeout_s=config.workers.job_timeout_s,
            memory_budget_mb=memory_budget_mb(config.workers.max_job_memory_mb),
        )
        self.scheduler = CompletionScheduler(
            self.store, self.spool.root, self.router, config.completion,
            on_jobs=self.workers.wake,
        )
        self.scp = StorageSCP(config, self.store, self.spool)
        self.http = HttpServer(config.http, self._http_node())
        self._stopped = threading.Event()

    def _http_node(self) -> Node:
        """What the HTTP interface reads: the store, spool, listener, models and threads."""

        def listener_port() -> int | None:
            try:
                return self.scp.port
            except RuntimeError:
                return None

        return Node(
            store=self.store, spool_root=self.spool.root, packages=self.packages,
            registry=self.registry, listener_port=listener_port,
            free_bytes=self.spool.free_bytes, wake_workers=self.workers.wake,
            wake_sender=self.sender.wake, cancel_job=self.workers.cancel,
            ae_title=self.config.node.ae_title,
            started_at=time.time(),
        )

    def _result_settings(self, job: JobRow) -> ResultSettings:
        """A job's objects carry its creation time, so re-running it rewrites them exactly."""
        return ResultSettings(
            results=self.config.results, output=self.config.output,
            templates_dir=self.config.path(self.config.results.sr_templates_dir),
            content_datetime=dt.datetime.fromtimestamp(job.created_at, dt.UTC).replace(
                microsecond=0),
            generation=job.generation,
        )

    def _outbox_rows(self, job: JobRow, result: PipelineResult) -> OutboxItems:
        """Every DICOM result of a job, to every configured destination."""
        files = result.dicom_files()
        names = [d.name for d in self.config.destinations]
        return outbox_rows(names, files, self.config.data_dir)

    def start(self) -> None:
        self.http.start()  # first: /health answers while recovery and models load
        recover_spool(self.spool, self.store, self.config.completion.late_instance_policy)
        recovered = self.store.recover_jobs(self.config.workers.max_attempts)
        if recovered.requeued or recovered.failed:
            log.info("recovery: %d interrupted jobs queued again, %d failed",
                     recovered.requeued, recovered.failed)
        for package in self.packages.values():  # sessions once, at start: one log line each
            for stage in package.manifest.stages:
                self.registry.get(package, stage)
        budget = self.workers.monitor.memory_budget_mb
        log.info("jobs: time limit %s, memory budget %s",
                 f"{self.workers.job_timeout_s:g} s" if self.workers.job_timeout_s else "none",
                 f"{budget} MB" if budget else "none")
        self.scheduler.start()
        self.workers.start()
        self.sender.start()
        self.scp.start()

    def stop(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Stop every part within ``timeout`` seconds; running jobs first (they are queued
        again), since a job is the only part that may be in a long step."""
        began = time.monotonic()
        deadline = began + timeout

        def left(reserve: float) -> float:
            return max(0.5, deadline - reserve - time.monotonic())

        self.workers.stop_jobs()  # their ONNX runs end now; they settle while intake stops
        self.http.stop()
        self.scp.stop()
        self.scheduler.stop()
        self.workers.stop(timeout=min(WORKERS_STOP_S, left(3.0)))
        self.sender.stop(timeout=left(1.0))
        self.store.close()
        self._stopped.set()
        log.info("stopped in %.2f s", time.monotonic() - began)

    def serve_forever(self) -> None:
        """Run until SIGINT or SIGTERM."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stopped.set())
        self.start()
        log.info("radnode is running; data in %s", self.config.data_dir)
        self._stopped.wait()
        log.info("stopping")
        self.stop()
