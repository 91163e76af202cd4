"""The listening socket: accepts connections and serves each in a thread of its own.

Every resource a peer can make the listener spend is bounded before the peer has associated
(docs/RELIABILITY.md, "Connections"):

- connections not yet associated ("pending": TLS handshake, waiting for or reading the
  A-ASSOCIATE-RQ) are counted, in all (``network.max_pending_connections``) and per source
  address (``network.max_pending_per_address``); one beyond either limit is answered with an
  A-ASSOCIATE-RJ (transient, local limit exceeded) and closed at once, without a thread;
- when the pending limit is reached, the oldest connection that has waited longer than
  ``network.busy_idle_timeout`` without completing its request is dropped to make room, so
  silent connections cannot lock new peers out for the whole ARTIM time;
- established associations are counted against ``node.max_associations``; when it is reached,
  the association idle longest between messages, if idle longer than
  ``network.busy_idle_timeout``, is aborted to admit the new one; otherwise the new one gets
  an A-ASSOCIATE-RJ (transient, local limit exceeded);
- accept errors (EMFILE and the like) back off, up to a second, with one log line when they
  start and one when they have stopped; refusals and drops are logged the same way;
- at start the file-descriptor limit is checked against what these limits need, and the soft
  limit raised where the hard limit allows (else one warning).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass

from node.receiver.association import (
    Association,
    AssociationHandlers,
    AssociationSettings,
    LogBudget,
    install_log_budgets,
    use_log_budget,
)
from node.receiver.negotiation import REJECT_LOCAL_LIMIT, reject

log = logging.getLogger("radnode.receiver")

# File descriptors: one per pending connection; an association holds its socket, a spool file
# and the spool file's map (a duplicate descriptor) and a spare; the rest of the node (job
# store, HTTP, logs, model files, workers reading series) gets FD_RESERVE.
FD_PER_ASSOCIATION = 4
FD_RESERVE = 256
_PEER_GONE = frozenset({errno.ECONNABORTED, errno.ECONNRESET, errno.EPROTO, errno.EINTR,
                        errno.EAGAIN, errno.EPERM})
_BACKOFF_FIRST, _BACKOFF_MOST = 0.01, 1.0
_QUIET = 10.0  # an episode of refusals or accept errors ends after this long without one
_TICK = 1.0  # the accept loop wakes at least this often to end episodes
_BUSY = reject(*REJECT_LOCAL_LIMIT)


@dataclass(frozen=True)
class ConnectionLimits:
    """The bounds on connections that have not associated yet (network.* settings)."""

    max_pending: int = 32
    max_pending_per_address: int = 4
    busy_idle_timeout: float = 5.0


@dataclass
class _Pending:
    address: str
    since: float


class _Episode:
    """Trouble that repeats (refusals, accept errors) logged as one line when it starts and one
    when it has been quiet for _QUIET seconds, with the count, instead of a line each time."""

    def __init__(self) -> None:
        self.count = 0
        self.first = self.last = 0.0

    def hit(self, now: float) -> bool:
        """Count one; True when this one starts an episode (the caller logs it)."""
        self.count += 1
        self.last = now
        if self.count == 1:
            self.first = now
            return True
        return False

    def ended(self, now: float) -> tuple[int, float] | None:
        """(count, seconds) once the episode is over; None while it lasts or if none."""
        if not self.count or now - self.last < _QUIET:
            return None
        result = (self.count, self.last - self.first)
        self.count = 0
        return result


def file_descriptors_needed(max_associations: int, limits: ConnectionLimits) -> int:
    return FD_RESERVE + FD_PER_ASSOCIATION * max_associations + limits.max_pending


def check_file_descriptors(max_associations: int, limits: ConnectionLimits) -> int:
    """Make RLIMIT_NOFILE fit the connection limits: raise the soft limit (to twice what they
    need, within the hard limit) if it is lower; if the hard limit is lower than they need,
    log one warning naming the settings (the node still runs: accept errors back off and each
    association fails alone, but peers may be turned away before the limits are reached).
    Returns the soft limit in force."""
    needed = file_descriptors_needed(max_associations, limits)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * needed if hard == resource.RLIM_INFINITY else min(hard, 2 * needed)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            log.info("file descriptors: soft limit raised from %d to %d (node.max_associations"
                     " and network.max_pending_connections need about %d)", soft, wanted,
                     needed)
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("file descriptors: cannot raise the soft limit from %d: %s", soft, exc)
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "file descriptors: the limit is %d but node.max_associations (%d) and "
            "network.max_pending_connections (%d) need about %d; raise the limit (ulimit -n, "
            "systemd LimitNOFILE=) or lower those settings", soft, max_associations,
            limits.max_pending, needed)
    return int(soft)


class AssociationServer:
    """start() binds and returns at once; stop() closes the listener and every connection."""

    def __init__(self, address: tuple[str, int], settings: AssociationSettings,
                 handlers: AssociationHandlers, max_associations: int,
                 ssl_context: ssl.SSLContext | None = None,
                 limits: ConnectionLimits | None = None) -> None:
        self.address = address
        self.settings = settings
        self.handlers = handlers
        self.max_associations = max_associations
        self.ssl_context = ssl_context
        self.limits = limits or ConnectionLimits()
        self._lock = threading.Lock()
        self._established: set[Association] = set()
        self._connections: set[socket.socket] = set()
        self._pending: dict[socket.socket, _Pending] = {}
        self._pending_by_address: Counter[str] = Counter()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        # lines about connections that have not associated: 10 of a kind a minute, then a count
        self._budget = LogBudget(per_kind=10, window=60.0, subject="connections")
        self._accept_errors = _Episode()
        self._refused_total = _Episode()
        self._refused_address = _Episode()
        self._dropped = _Episode()

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("the listener is not running")
        return int(self._listener.getsockname()[1])

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def start(self) -> None:
        install_log_budgets()
        check_file_descriptors(self.max_associations, self.limits)
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(self.address)
        listener.listen(128)
        listener.settimeout(_TICK)
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

    # -- accepting -------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        use_log_budget(self._budget)
        backoff = _BACKOFF_FIRST
        while not self._stopping.is_set():
            try:
                conn, address = self._listener.accept()
            except TimeoutError:
                self._end_episodes(time.monotonic())
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    return
                if exc.errno in _PEER_GONE:  # the peer left before it was accepted
                    continue
                if self._accept_errors.hit(time.monotonic()):
                    log.error("accepting connections failed: %s; backing off (up to %.0f s "
                              "between tries) until it works again",
                              exc.strerror or type(exc).__name__, _BACKOFF_MOST)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MOST)
                continue
            backoff = _BACKOFF_FIRST
            now = time.monotonic()
            self._end_episodes(now)
            try:
                self._take(conn, address, now)
            except Exception:  # e.g. no thread could be started: this connection only
                log.exception("serving a connection from %s failed", address[0])
                _close(conn)

    def _take(self, conn: socket.socket, address: tuple[str, int], now: float) -> None:
        """Count the connection as pending and serve it in a thread, or refuse it at once."""
        host = address[0]
        limits = self.limits
        victim: socket.socket | None = None
        refusal = ""
        with self._lock:
            if self._pending_by_address[host] >= limits.max_pending_per_address:
                refusal = "address"
            elif len(self._pending) >= limits.max_pending:
                victim = self._oldest_pending(now)
                if victim is None:
                    refusal = "total"
                else:
                    self._leave_pending(victim)
            if not refusal:
                self._pending[conn] = _Pending(host, now)
                self._pending_by_address[host] += 1
                self._connections.add(conn)
        if victim is not None:
            if self._dropped.hit(now):
                log.warning("network.max_pending_connections (%d) reached: dropping "
                            "connections that sent no association request within %.0f s "
                            "(network.busy_idle_timeout) to make room", limits.max_pending,
                            limits.busy_idle_timeout)
            with contextlib.suppress(OSError):
                victim.shutdown(socket.SHUT_RDWR)  # its thread ends at its next read
        if refusal == "address":
            if self._refused_address.hit(now):
                log.warning("refusing connections from %s: %d not yet associated from that "
                            "address (network.max_pending_per_address); further refusals are "
                            "counted", host, limits.max_pending_per_address)
            self._refuse(conn)
        elif refusal == "total":
            if self._refused_total.hit(now):
                log.warning("refusing connections: %d not yet associated "
                            "(network.max_pending_connections); further refusals are counted",
                            limits.max_pending)
            self._refuse(conn)
        else:
            threading.Thread(target=self._serve, args=(conn, address), daemon=True,
                             name=f"association-{host}:{address[1]}").start()

    def _oldest_pending(self, now: float) -> socket.socket | None:
        """The pending connection waiting longest, if longer than busy_idle_timeout."""
        oldest = min(self._pending.items(), key=lambda item: item[1].since, default=None)
        if oldest is None or now - oldest[1].since < self.limits.busy_idle_timeout:
            return None
        return oldest[0]

    def _leave_pending(self, conn: socket.socket) -> None:
        """Under the lock: the connection has associated, was dropped or has ended."""
        pending = self._pending.pop(conn, None)
        if pending is not None:
            self._pending_by_address[pending.address] -= 1
            if self._pending_by_address[pending.address] <= 0:
                del self._pending_by_address[pending.address]

    def _refuse(self, conn: socket.socket) -> None:
        """A-ASSOCIATE-RJ (transient, local limit exceeded) without waiting, then close."""
        with contextlib.suppress(OSError):
            conn.setblocking(False)
            if self.ssl_context is None:  # under TLS nothing can be said before a handshake
                with contextlib.suppress(OSError):
                    conn.recv(1 << 16)  # what has arrived: a close with unread data resets
                conn.send(_BUSY)
        conn.close()

    def _end_episodes(self, now: float) -> None:
        for episode, what in ((self._accept_errors, "accepting connections works again after"
                               " %d failures in %.1f s"),
                              (self._refused_total, "refused %d connections in %.1f s "
                               "(network.max_pending_connections)"),
                              (self._refused_address, "refused %d connections in %.1f s "
                               "(network.max_pending_per_address)"),
                              (self._dropped, "dropped %d silent connections in %.1f s to make"
                               " room (network.busy_idle_timeout)")):
            ended = episode.ended(now)
            if ended is not None:
                log.warning(what, *ended)

    # -- serving ---------------------------------------------------------------------------

    def _serve(self, conn: socket.socket, address: tuple[str, int]) -> None:
        use_log_budget(self._budget)
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
            association = Association(sock, address, self.settings, self.handlers,
                                      lambda a: self._admit(a, conn))
            association.run()
        finally:
            with self._lock:
                self._connections.discard(conn)
                self._leave_pending(conn)
                if association is not None:
                    self._established.discard(association)

    def _admit(self, association: Association, conn: socket.socket) -> bool:
        """Count an association that passed the access checks; when node.max_associations is
        reached, make room by aborting the one idle longest (if longer than
        busy_idle_timeout)."""
        now = time.monotonic()
        with self._lock:
            victim: Association | None = None
            idle = 0.0
            if len(self._established) >= self.max_associations:
                for other in self._established:
                    seconds = other.idle_for(now)
                    if seconds is not None and seconds >= self.limits.busy_idle_timeout \
                            and seconds > idle:
                        victim, idle = other, seconds
                if victim is None or not victim.evict():
                    return False
                self._established.discard(victim)
            self._established.add(association)
            self._leave_pending(conn)
        if victim is not None:
            log.warning("association from %s (%s) idle for %.0f s aborted to admit one from "
                        "%s: node.max_associations (%d) reached", victim.request.calling_ae_title
                        if victim.request else "?", victim.address[0], idle,
                        association.address[0], self.max_associations)
        return True


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()
