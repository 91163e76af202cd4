"""The service: receiver, completion scheduler and (later) workers and sender, in one process."""

from __future__ import annotations

import logging
import signal
import threading

from node.completion import CompletionScheduler
from node.config import Config
from node.receiver.recovery import recover_spool
from node.receiver.scp import StorageSCP
from node.receiver.spool import Spool
from node.routing.router import Router
from node.store.jobstore import JobStore

log = logging.getLogger("radnode.service")


class Service:
    def __init__(self, config: Config) -> None:
        self.config = config
        data = config.data_dir
        data.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(data / "radnode.db")
        self.spool = Spool(data / "spool", fsync=config.storage.fsync)
        self.router = Router(config.routes)
        self.scheduler = CompletionScheduler(
            self.store, self.spool.root, self.router, config.completion
        )
        self.scp = StorageSCP(config, self.store, self.spool)
        self._stopped = threading.Event()

    def start(self) -> None:
        recover_spool(self.spool, self.store, self.config.completion.late_instance_policy)
        self.scheduler.start()
        self.scp.start()

    def stop(self) -> None:
        self.scp.stop()
        self.scheduler.stop()
        self.store.close()
        self._stopped.set()

    def serve_forever(self) -> None:
        """Run until SIGINT or SIGTERM."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stopped.set())
        self.start()
        log.info("radnode is running; data in %s", self.config.data_dir)
        self._stopped.wait()
        log.info("stopping")
        self.stop()
