"""The listening socket: accepts connections and serves each in a thread of its own.

It counts established associations against node.max_associations (a request beyond it is
rejected as transient, local limit exceeded) and speaks DICOM TLS when given a context.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading

from node.receiver.association import (
    Association,
    AssociationHandlers,
    AssociationSettings,
)

log = logging.getLogger("radnode.receiver")


class AssociationServer:
    """start() binds and returns at once; stop() closes the listener and every connection."""

    def __init__(self, address: tuple[str, int], settings: AssociationSettings,
                 handlers: AssociationHandlers, max_associations: int,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.address = address
        self.settings = settings
        self.handlers = handlers
        self.max_associations = max_associations
        self.ssl_context = ssl_context
        self._lock = threading.Lock()
        self._established: set[Association] = set()
        self._connections: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("the listener is not running")
        return int(self._listener.getsockname()[1])

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(self.address)
        listener.listen(128)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, name="dicom-listener",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, address = self._listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                log.exception("accepting a connection failed")
                continue
            threading.Thread(target=self._serve, args=(conn, address), daemon=True,
                             name=f"association-{address[0]}:{address[1]}").start()

    def _serve(self, conn: socket.socket, address: tuple[str, int]) -> None:
        with self._lock:
            self._connections.add(conn)
        association: Association | None = None
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = conn
            if self.ssl_context is not None:
                conn.settimeout(self.settings.acse_timeout)
                try:
                    sock = self.ssl_context.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    log.warning("TLS handshake with %s failed: %s", address[0],
                                getattr(exc, "reason", None) or type(exc).__name__)
                    conn.close()
                    return
            association = Association(sock, address, self.settings, self.handlers, self._admit)
            association.run()
        finally:
            with self._lock:
                self._connections.discard(conn)
                if association is not None:
                    self._established.discard(association)

    def _admit(self, association: Association) -> bool:
        with self._lock:
            if len(self._established) >= self.max_associations:
                return False
            self._established.add(association)
            return True
