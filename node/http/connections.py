"""Bounded connection handling for the HTTP interface: one selector thread, a fixed worker pool.

Why not ``ThreadingHTTPServer``: it gives every connection a thread of its own for as long as the
client likes, so 300 half-open requests hold 300 threads. Here one thread reads every connection
without blocking until a whole request (head and declared body) has arrived, and only then hands
it to one of ``http.threads`` workers; a connection waiting for bytes costs a file descriptor and
a buffer, never a thread. Each request has ``http.timeout_seconds`` from the moment its
connection became idle to arrive in full (slow or half-open clients get 408, idle keep-alive
connections are closed), at most ``http.max_connections`` connections are open (past it the one
that has waited longest is closed to make room, or a newcomer gets 503 when every one is busy),
and a request head larger than :data:`MAX_HEAD_BYTES` gets 431.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import queue
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

log = logging.getLogger("radnode.http")

MAX_HEAD_BYTES = 32 * 1024  # request line and headers; browsers send well under 8 KiB
LINGER_SECONDS = 2.0  # after a refusal, read and drop what the client still sends, then close
ACCEPT_BATCH = 64  # connections accepted per wake-up, so reads are not starved by a flood
_HEAD_END = re.compile(rb"\r?\n\r?\n")


@dataclass(eq=False)
class Connection:
    """One client connection: its socket, the bytes read and not yet served, its deadline."""

    sock: socket.socket
    address: Any
    since: float
    deadline: float
    buffer: bytearray = field(default_factory=bytearray)
    scanned: int = 0  # bytes of ``buffer`` already searched for the end of the head
    closing: bool = False  # answered and shut down for writing; lingering until the peer closes
    continued: bool = False  # "100 Continue" sent for the request being read


class Throttle:
    """At most one log line per kind and interval, with a count of those left out, so an attack
    costs a few log lines and not one per request."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, int]] = {}

    def log(self, level: int, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            last, left_out = self._state.get(kind, (-self.interval, 0))
            if now - last < self.interval:
                self._state[kind] = (last, left_out + 1)
                return
            self._state[kind] = (now, 0)
        if left_out:
            message += f" ({left_out} more like it in the last {self.interval:.0f} s)"
        log.log(level, message, *args)


def canned_response(status: int, message: str) -> bytes:
    """A whole error response (JSON body, ``Connection: close``) for the selector thread."""
    body = (json.dumps({"error": {"status": status, "message": message}}) + "\n").encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n"
            "X-Content-Type-Options: nosniff\r\n\r\n")
    return head.encode() + body


def declared_length(head: bytes, max_body: int) -> int | None:
    """The body length a request head declares (0 when none), or ``None`` when the worker must
    refuse it at once (chunked, several or malformed Content-Length, larger than ``max_body``)."""
    values = set()
    for line in head.split(b"\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            values.add(value.strip())
    if not values:
        return 0
    if len(values) > 1:
        return None
    (raw,) = values
    if not raw.isdigit() or len(raw) > 18:
        return None
    length = int(raw)
    return length if length <= max_body else None


# serve(connection, request bytes) -> True to keep the connection open for the next request
Serve = Callable[[Connection, bytes], bool]


class ConnectionPool:
    """Accepts and reads connections on one thread; serves whole requests on ``threads``."""

    def __init__(self, listener: socket.socket, serve: Serve, *, threads: int,
                 max_connections: int, timeout: float, max_body: int) -> None:
        self.listener = listener
        self.serve = serve
        self.threads = threads
        self.max_connections = max_connections
        self.timeout = timeout
        self.max_body = max_body
        self.throttle = Throttle()
        self._selector = selectors.DefaultSelector()
        self._pending: dict[Connection, None] = {}  # waiting for bytes, in arrival order
        self._busy = 0  # handed to the workers and not yet back
        self._busy_lock = threading.Lock()
        self._work: queue.SimpleQueue[tuple[Connection, bytes] | None] = queue.SimpleQueue()
        self._returned: collections.deque[Connection] = collections.deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def start(self) -> None:
        self.listener.setblocking(False)
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self.listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._threads.append(threading.Thread(target=self._run, name="radnode-http",
                                              daemon=True))
        self._threads += [threading.Thread(target=self._work_loop, name=f"radnode-http-{n}",
                                           daemon=True) for n in range(self.threads)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        for _ in range(self.threads):
            self._work.put(None)
        deadline = time.monotonic() + 5
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []
        while self._returned:  # answered after the selector thread ended
            self._returned.popleft().sock.close()
        self._wake_w.close()

    # -- the selector thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                for key, _ in self._selector.select(timeout=0.2):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._take_back()
                    else:
                        self._read(key.data)
                self._expire()
        except Exception:  # a bug here would silently end the HTTP interface: say so
            log.exception("the HTTP interface stopped")
        finally:
            for conn in list(self._pending):
                self._drop(conn)
            for conn in self._returned:
                conn.sock.close()
            self._selector.close()
            self.listener.close()
            self._wake_r.close()

    def _wake(self) -> None:
        # OSError: the pipe is full (a wake-up is pending anyway) or closed
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # EMFILE and the like: the connection waits in the backlog
                self.throttle.log(logging.WARNING, "accept",
                                  "HTTP: cannot accept a connection: %s", exc.strerror or exc)
                return
            sock.setblocking(False)
            if len(self._pending) + self._busy >= self.max_connections and not self._evict():
                self.throttle.log(logging.WARNING, "full",
                                  "HTTP: %d connections, all busy (http.max_connections); "
                                  "refused one with 503", self.max_connections)
                _send_quietly(sock, canned_response(503, "the node is busy; try again"))
                sock.close()
                continue
            now = time.monotonic()
            self._add(Connection(sock, address, now, now + self.timeout))

    def _add(self, conn: Connection) -> None:
        self._pending[conn] = None
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _evict(self) -> bool:
        """Close the connection that has waited longest for a request, to make room."""
        victim = min(self._pending, key=lambda c: (not c.closing, c.since), default=None)
        if victim is None:
            return False
        if not victim.closing:
            self.throttle.log(logging.WARNING, "evict",
                              "HTTP: %d connections open (http.max_connections); closed the one "
                              "idle longest to make room", self.max_connections)
        self._drop(victim)
        return True

    def _drop(self, conn: Connection) -> None:
        self._pending.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        conn.sock.close()

    def _read(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
        elif not conn.closing:
            conn.buffer += data
            self._advance(conn)

    def _advance(self, conn: Connection) -> None:
        """Hand the connection's next request to a worker once all of it has arrived."""
        buf = conn.buffer
        while buf[:2] == b"\r\n" or buf[:1] == b"\n":  # RFC 9112 2.2: empty lines before one
            del buf[:2 if buf[:2] == b"\r\n" else 1]
            conn.scanned = 0
        match = _HEAD_END.search(buf, max(0, conn.scanned - 3))
        if match is None or match.end() > MAX_HEAD_BYTES:
            conn.scanned = len(buf)
            if len(buf) > MAX_HEAD_BYTES:
                self._refuse(conn, 431, f"the request head is larger than {MAX_HEAD_BYTES} "
                                        "bytes", "too-large")
            return
        head = bytes(buf[:match.end()])
        length = declared_length(head, self.max_body)
        need = match.end() + (length or 0)  # None: the worker refuses it without a body
        if len(buf) < need:
            if not conn.continued and b"100-continue" in head.lower():
                _send_quietly(conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n")
                conn.continued = True
            return
        conn.continued = False
        request = bytes(buf[:need])
        conn.buffer = bytearray(buf[need:])
        conn.scanned = 0
        self._pending.pop(conn, None)
        self._selector.unregister(conn.sock)
        with self._busy_lock:
            self._busy += 1
        self._work.put((conn, request))

    def _refuse(self, conn: Connection, status: int, message: str, kind: str) -> None:
        self.throttle.log(logging.INFO, kind, "HTTP: answered %d to %s: %s", status,
                          conn.address[0], message)
        _send_quietly(conn.sock, canned_response(status, message))
        self._linger(conn)

    def _linger(self, conn: Connection) -> None:
        """Shut down for writing, then drop what the client still sends until it closes (so
        its unread bytes do not turn our answer into a reset), for a bounded time."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(conn)
            return
        conn.closing = True
        conn.buffer = bytearray()
        conn.deadline = min(conn.deadline, time.monotonic() + LINGER_SECONDS)

    def _expire(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self._pending if c.deadline <= now]:
            if conn.closing or not conn.buffer:  # lingered enough, or idle between requests
                self._drop(conn)
            else:
                conn.deadline = now + LINGER_SECONDS
                self._refuse(conn, 408, f"the request did not arrive in full within "
                                        f"{self.timeout:g} s (http.timeout_seconds)", "timeout")

    def _take_back(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:  # drained
            pass
        while self._returned:
            conn = self._returned.popleft()
            with self._busy_lock:
                self._busy -= 1
            if self._stopping.is_set():
                conn.sock.close()
                continue
            now = time.monotonic()
            conn.since = now
            conn.deadline = now + self.timeout
            try:
                conn.sock.setblocking(False)
                self._add(conn)
            except (OSError, ValueError):
                conn.sock.close()
                continue
            if conn.closing:
                self._linger(conn)
            elif conn.buffer:  # a pipelined request may be complete already
                self._advance(conn)

    # -- the workers -----------------------------------------------------------------------

    def _work_loop(self) -> None:
        while (item := self._work.get()) is not None:
            conn, request = item
            keep = False
            try:
                conn.sock.settimeout(self.timeout)  # sendall: the whole answer within it
                keep = self.serve(conn, request)
            except OSError as exc:  # the client went away mid-answer
                log.debug("HTTP: connection from %s lost: %s", conn.address[0], exc)
                conn.closing = True
            except Exception:
                log.exception("HTTP: serving a request failed")
                conn.closing = True
            if not keep:
                conn.closing = True
            self._returned.append(conn)
            self._wake()


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send what fits without blocking; a client that does not read loses the answer."""
    with contextlib.suppress(OSError):
        sock.send(data)
