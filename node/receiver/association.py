"""One accepted connection, as the DICOM upper layer's acceptor (PS3.8 section 9), with its
DIMSE messages dispatched to the node's handlers.

Datasets stream: each P-DATA fragment is read from the socket into one reused buffer and handed
straight to the handler's sink (the spool file), so an instance is never assembled in memory
and a peer that claims gigabytes costs what it actually sends, on disk, not in RAM. Anything
that breaks the protocol aborts this association only.

The A-ASSOCIATE-RQ must arrive, whole, within ``acse_timeout`` (ARTIM, a deadline, not a per-read
timeout) and within ``max_request_length`` bytes. Warnings logged while an association runs go
through a :class:`LogBudget`: the first few of each kind, then one summary line at its end.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pynetdicom.presentation import PresentationContext

from node.errors import NodeError
from node.receiver import dimse
from node.receiver.negotiation import (
    APPLICATION_CONTEXT_NAME,
    REJECT_APPLICATION_CONTEXT,
    REJECT_LOCAL_LIMIT,
    REJECT_REQUEST_TOO_LARGE,
    AssociationRequest,
    NegotiationError,
    RequestRefusedError,
    accept,
    read_request,
    reject,
)

log = logging.getLogger("radnode.receiver")

A_ASSOCIATE_RQ = 0x01
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_ABORT = 0x07
_KNOWN_PDU_TYPES = frozenset(range(0x01, 0x08))

# A-ABORT reasons from the service provider (PS3.8 table 9-26).
ABORT_NOT_SPECIFIED = 0x00
ABORT_UNRECOGNIZED_PDU = 0x01
ABORT_UNEXPECTED_PDU = 0x02
ABORT_INVALID_PARAMETER = 0x06

MAX_COMMAND_SET = 1 << 16  # a command set is a few hundred bytes
_CHUNK = 1 << 20  # what one read passes to the sink at most

_HEADER = struct.Struct(">BBL")
_PDV_HEADER = struct.Struct(">LBB")


class DatasetSink(Protocol):
    """Where a dataset goes while it arrives; finish() gives the response status."""

    def write(self, data: memoryview) -> None: ...
    def finish(self) -> int: ...
    def discard(self) -> None: ...


@dataclass(frozen=True)
class StoreRequest:
    association: AssociationRequest
    command: dimse.Command
    context: PresentationContext

    @property
    def transfer_syntax(self) -> str:
        return str(self.context.transfer_syntax[0])


class AssociationHandlers(Protocol):
    """What the node does at each event, in the spirit of pynetdicom's event handlers."""

    def on_requested(self, request: AssociationRequest) -> tuple[int, int, int] | None:
        """None to accept, else the A-ASSOCIATE-RJ (result, source, reason)."""
        ...

    def on_accepted(self, request: AssociationRequest) -> None: ...
    def on_aborted(self, request: AssociationRequest) -> None: ...
    def on_echo(self, request: AssociationRequest) -> int: ...

    def on_store(self, request: StoreRequest) -> DatasetSink | int:
        """A sink for the dataset, or a status that refuses it before it arrives."""
        ...


@dataclass(frozen=True)
class AssociationSettings:
    acse_timeout: float
    dimse_timeout: float
    network_timeout: float
    max_pdu_length: int  # what the node receives; 0 means no limit
    contexts: list[PresentationContext]
    max_request_length: int = 1 << 16  # largest A-ASSOCIATE-RQ read (network.max_associate_request)


# -- log budgets ----------------------------------------------------------------------------

_BUDGET: contextvars.ContextVar[LogBudget | None] = contextvars.ContextVar(
    "radnode_log_budget", default=None)
_BUDGETED_LOGGERS = ("radnode.receiver", "pydicom", "pynetdicom")


class LogBudget:
    """Lets the first ``per_kind`` warnings of each kind (logger, level and message template)
    through and counts the rest, so one peer cannot write a log line per item it sends.

    An association's own budget is reported by :meth:`report` when it ends; a shared budget
    (``window`` seconds) starts over after each window and reports what it held back then.
    Records below WARNING are not counted.
    """

    def __init__(self, per_kind: int, window: float | None = None, subject: str = "") -> None:
        self.per_kind = per_kind
        self.window = window
        self.subject = subject
        self._lock = threading.Lock()
        self._seen: Counter[tuple[str, int, str]] = Counter()
        self._held: Counter[tuple[str, int, str]] = Counter()
        self._started = time.monotonic()

    def admit(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        report = None
        with self._lock:
            now = time.monotonic()
            if self.window is not None and now - self._started >= self.window:
                report = self._take(f"in the last {now - self._started:.0f} s")
                self._started = now
            self._seen[key] += 1
            admitted = self._seen[key] <= self.per_kind
            if not admitted:
                self._held[key] += 1
        if report:
            _log_unbudgeted(report)
        return admitted

    def report(self, where: str = "") -> None:
        """Log one line for what was held back (nothing if nothing was)."""
        with self._lock:
            line = self._take(where)
        if line:
            _log_unbudgeted(line)

    def _take(self, where: str) -> str | None:
        held = self._held
        self._seen, self._held = Counter(), Counter()
        if not held:
            return None
        (name, _, template), most = held.most_common(1)[0]
        return (f"{self.subject}{' ' if self.subject else ''}{where}: {sum(held.values())} more "
                f"warnings held back ({len(held)} kinds; most often {most} x {name}: "
                f"{template[:120]!r})")


def _log_unbudgeted(line: str) -> None:
    token = _BUDGET.set(None)
    try:
        log.warning("%s", line)
    finally:
        _BUDGET.reset(token)


class _BudgetFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        budget = _BUDGET.get()
        return budget is None or budget.admit(record)


_FILTER = _BudgetFilter()


def install_log_budgets() -> None:
    """Put the budget filter on the receiver's, pydicom's and pynetdicom's loggers (a logger's
    own filters see only its own records, so each pynetdicom module's logger gets one)."""
    names = {*_BUDGETED_LOGGERS, *(name for name in logging.Logger.manager.loggerDict
                                    if name.startswith("pynetdicom."))}
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def use_log_budget(budget: LogBudget | None) -> None:
    """Bind ``budget`` to the calling thread's log records (threads start with none)."""
    _BUDGET.set(budget)


class PeerClosedError(NodeError, ConnectionError):
    """The peer closed the connection."""


class ProtocolError(NodeError, ValueError):
    """The peer broke the upper-layer protocol; carries the A-ABORT reason."""

    def __init__(self, message: str, reason: int = ABORT_INVALID_PARAMETER) -> None:
        super().__init__(message)
        self.reason = reason


class _Refused:
    """Reads and drops a dataset that was refused before it arrived."""

    def __init__(self, status: int) -> None:
        self.status = status

    def write(self, data: memoryview) -> None:
        pass

    def finish(self) -> int:
        return self.status

    def discard(self) -> None:
        pass


@dataclass
class _Incoming:
    """The message being received: its command set, then its dataset."""

    context_id: int
    command_bytes: bytearray
    command: dimse.Command | None = None
    sink: DatasetSink | None = None


class Association:
    """Serves one connection until release, abort, timeout or close; never raises."""

    def __init__(self, sock: socket.socket, address: tuple[str, int],
                 settings: AssociationSettings, handlers: AssociationHandlers,
                 admit: Callable[[Association], bool]) -> None:
        self.sock = sock
        self.address = address
        self.settings = settings
        self.handlers = handlers
        self.admit = admit
        self.request: AssociationRequest | None = None
        self.contexts: dict[int, PresentationContext] = {}
        self._incoming: _Incoming | None = None
        self._buffer = memoryview(b"")  # allocated once established (max_associations bound it)
        self._header = memoryview(bytearray(_HEADER.size))
        self._deadline: float | None = None  # ARTIM, while the request is awaited
        self._state = threading.Lock()
        self._idle_since: float | None = None  # waiting for a new message since then
        self._evicted = False
        self.budget = LogBudget(per_kind=5, subject=f"association from {address[0]}")

    def run(self) -> None:
        try:
            if self._negotiate():
                self._serve()
        except PeerClosedError:
            if self._incoming is not None:
                log.warning("association from %s closed in the middle of a message",
                            self.address[0])
        except TimeoutError:
            if self.request is None:
                log.warning("connection from %s dropped: no A-ASSOCIATE-RQ within %.0f s",
                            self.address[0], self.settings.acse_timeout)
            else:
                log.warning("association from %s dropped: nothing received for %.0f s",
                            self.address[0], self.sock.gettimeout() or 0)
            self._abort(ABORT_NOT_SPECIFIED)
        except ProtocolError as exc:
            log.warning("association from %s aborted: %s", self.address[0], exc)
            self._abort(exc.reason)
        except OSError as exc:
            log.warning("association from %s ended: %s", self.address[0],
                        exc.strerror or type(exc).__name__)
        except Exception:
            log.exception("association from %s failed unexpectedly", self.address[0])
            self._abort(ABORT_NOT_SPECIFIED)
        finally:
            self._drop_incoming()
            _close(self.sock)
            if _BUDGET.get() is self.budget:
                self.budget.report("ended")

    def _drop_incoming(self) -> None:
        """Discard a message cut off by abort or close (its partial spool file with it)."""
        if self._incoming is not None and self._incoming.sink is not None:
            self._incoming.sink.discard()
        self._incoming = None

    # -- association establishment -------------------------------------------------------

    def _negotiate(self) -> bool:
        self._deadline = time.monotonic() + self.settings.acse_timeout
        pdu_type, length = self._read_header()
        if pdu_type != A_ASSOCIATE_RQ:
            raise ProtocolError(
                f"PDU type 0x{pdu_type:02X} before an A-ASSOCIATE-RQ",
                ABORT_UNEXPECTED_PDU if pdu_type in _KNOWN_PDU_TYPES else ABORT_UNRECOGNIZED_PDU,
            )
        limit = self.settings.max_request_length
        if length > limit:  # refused before it is read: answer, then drop what follows
            log.warning("association from %s rejected: A-ASSOCIATE-RQ of %d bytes, more than "
                        "network.max_associate_request (%d)", self.address[0], length, limit)
            self.sock.sendall(reject(*REJECT_REQUEST_TOO_LARGE))
            self._drain(min(length, 4 * limit))
            return False
        body = bytearray(_HEADER.size + length)
        _HEADER.pack_into(body, 0, pdu_type, 0, length)
        self._fill(memoryview(body)[_HEADER.size:])
        self._deadline = None
        try:
            request = read_request(bytes(body), *self.address[:2])
        except NegotiationError as exc:
            raise ProtocolError(str(exc)) from exc
        except RequestRefusedError as exc:
            log.warning("association from %s rejected: %s", self.address[0], exc)
            self.sock.sendall(reject(*exc.rejection))
            return False
        self.request = request
        refusal = self._refusal(request)
        if refusal is not None:
            self.sock.sendall(reject(*refusal))
            return False
        use_log_budget(self.budget)  # admitted: from here on this association's own budget
        if request.invalid_uids:
            log.warning("association from %s (%s): %d UIDs in the request are not valid UIDs;"
                        " their contexts are rejected", request.calling_ae_title,
                        request.address, request.invalid_uids)
        pdu, self.contexts = accept(request, self.settings.contexts,
                                    self.settings.max_pdu_length)
        self.sock.sendall(pdu)
        self.handlers.on_accepted(request)
        return True

    def _refusal(self, request: AssociationRequest) -> tuple[int, int, int] | None:
        if request.application_context_name != APPLICATION_CONTEXT_NAME:
            log.warning("association from %s rejected: unknown application context",
                        request.address)
            return REJECT_APPLICATION_CONTEXT
        refusal = self.handlers.on_requested(request)
        if refusal is None and not self.admit(self):
            log.warning("association from %s (%s) rejected: node.max_associations reached",
                        request.calling_ae_title, request.address)
            refusal = REJECT_LOCAL_LIMIT
        return refusal

    # -- data transfer -------------------------------------------------------------------

    def _serve(self) -> None:
        self._buffer = memoryview(bytearray(_CHUNK))
        while True:
            idle = self._incoming is None
            self.sock.settimeout(self.settings.network_timeout if idle else
                                 min(self.settings.network_timeout,
                                     self.settings.dimse_timeout))
            if idle:
                with self._state:
                    self._idle_since = time.monotonic()
            pdu_type, length = self._read_header()
            with self._state:
                self._idle_since = None
                if self._evicted:
                    raise PeerClosedError()
            if pdu_type == P_DATA_TF:
                limit = self.settings.max_pdu_length
                if limit and length > limit:
                    raise ProtocolError(f"P-DATA-TF of {length} bytes; the node takes {limit}"
                                        " (network.max_pdu_size)")
                self._pdata(length)
            elif pdu_type == A_RELEASE_RQ:
                self._skip(length)
                if self._incoming is not None:
                    log.warning("association from %s released in the middle of a message",
                                self.address[0])
                self.sock.sendall(b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00")  # A-RELEASE-RP
                return
            elif pdu_type == A_ABORT:
                self._skip(min(length, 64))
                assert self.request is not None
                self.handlers.on_aborted(self.request)
                return
            elif pdu_type in _KNOWN_PDU_TYPES:
                raise ProtocolError(f"unexpected PDU type 0x{pdu_type:02X}",
                                    ABORT_UNEXPECTED_PDU)
            else:
                raise ProtocolError(f"unknown PDU type 0x{pdu_type:02X}",
                                    ABORT_UNRECOGNIZED_PDU)

    def _pdata(self, length: int) -> None:
        remaining = length
        while remaining:
            if remaining < _PDV_HEADER.size:
                raise ProtocolError("P-DATA-TF ends inside a PDV header")
            header = self._header[: _PDV_HEADER.size]
            self._fill(header)
            item_length, context_id, control = _PDV_HEADER.unpack(header)
            if item_length < 2 or item_length + 4 > remaining:
                raise ProtocolError(f"PDV length {item_length} in a PDU of {length} bytes")
            remaining -= item_length + 4
            self._fragment(context_id, bool(control & 1), bool(control & 2), item_length - 2)

    def _fragment(self, context_id: int, is_command: bool, last: bool, size: int) -> None:
        if context_id not in self.contexts:
            raise ProtocolError(f"PDV on presentation context {context_id}, not accepted")
        incoming = self._incoming
        if is_command:
            if incoming is None:
                incoming = self._incoming = _Incoming(context_id, bytearray())
            elif incoming.command is not None or incoming.context_id != context_id:
                raise ProtocolError("command fragment while a dataset was expected",
                                    ABORT_UNEXPECTED_PDU)
            if len(incoming.command_bytes) + size > MAX_COMMAND_SET:
                raise ProtocolError("command set larger than 64 KB")
            start = len(incoming.command_bytes)
            incoming.command_bytes.extend(bytes(size))
            self._fill(memoryview(incoming.command_bytes)[start:])
            if last:
                self._command_complete(incoming)
            return
        if incoming is None or incoming.sink is None or incoming.context_id != context_id:
            raise ProtocolError("dataset fragment without its command", ABORT_UNEXPECTED_PDU)
        while size:
            view = self._buffer[: min(size, len(self._buffer))]
            self._fill(view)
            incoming.sink.write(view)
            size -= len(view)
        if last:
            sink, incoming.sink = incoming.sink, None
            assert incoming.command is not None
            self._incoming = None
            self._respond(context_id, incoming.command, sink.finish())

    def _command_complete(self, incoming: _Incoming) -> None:
        try:
            command = dimse.read_command(incoming.command_bytes)
        except dimse.CommandError as exc:
            raise ProtocolError(str(exc)) from exc
        incoming.command = command
        assert self.request is not None
        field = command.command_field
        if field == dimse.C_CANCEL_RQ:
            self._incoming = None
            return
        if field == dimse.C_STORE_RQ and command.has_dataset:
            outcome = self.handlers.on_store(
                StoreRequest(self.request, command, self.contexts[incoming.context_id]))
            incoming.sink = _Refused(outcome) if isinstance(outcome, int) else outcome
            return
        if command.has_dataset:  # a service the node does not offer: read, drop, answer
            incoming.sink = _Refused(dimse.UNRECOGNIZED_OPERATION)
            return
        self._incoming = None
        if field == dimse.C_ECHO_RQ:
            status = self.handlers.on_echo(self.request)
        elif field == dimse.C_STORE_RQ:
            log.warning("C-STORE from %s without a dataset", self.request.calling_ae_title)
            status = 0xC000
        else:
            status = dimse.UNRECOGNIZED_OPERATION
        self._respond(incoming.context_id, command, status)

    def _respond(self, context_id: int, request: dimse.Command, status: int) -> None:
        data = dimse.response(request, status)
        assert self.request is not None
        step = max(self.request.max_pdu_length - 6, 1) if self.request.max_pdu_length else len(data)
        pdus = []
        for start in range(0, len(data), step):
            piece = data[start:start + step]
            control = 0x01 | (0x02 if start + len(piece) >= len(data) else 0)
            pdv = _PDV_HEADER.pack(len(piece) + 2, context_id, control) + piece
            pdus.append(_HEADER.pack(P_DATA_TF, 0, len(pdv)) + pdv)
        self.sock.sendall(b"".join(pdus))

    # -- reading and closing ------------------------------------------------------------

    def _read_header(self) -> tuple[int, int]:
        self._fill(self._header)
        pdu_type, _, length = _HEADER.unpack(self._header)
        return pdu_type, length

    def _fill(self, view: memoryview) -> None:
        """Read exactly len(view) bytes; PeerClosedError if the connection ends first,
        TimeoutError once the ARTIM deadline (while awaiting the request) has passed."""
        got, size = 0, len(view)
        while got < size:
            if self._deadline is not None:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError()
                self.sock.settimeout(left)
            n = self.sock.recv_into(view[got:])
            if not n:
                raise PeerClosedError()
            got += n

    def _skip(self, length: int) -> None:
        while length:
            view = self._buffer[: min(length, len(self._buffer))]
            self._fill(view)
            length -= len(view)

    def _drain(self, length: int) -> None:
        """Read and drop up to ``length`` bytes (until the deadline), so that the close after a
        rejection does not reset the connection before the peer has read the answer."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        scratch = memoryview(bytearray(1 << 16))
        with contextlib.suppress(OSError, PeerClosedError):
            while length > 0:
                view = scratch[: min(length, len(scratch))]
                self._fill(view)
                length -= len(view)

    def idle_for(self, now: float) -> float | None:
        """Seconds this association has waited for a new message; None while one is under way."""
        with self._state:
            return None if self._idle_since is None else now - self._idle_since

    def evict(self) -> bool:
        """Abort this association if it is still idle (to make room for another); False if a
        message started meanwhile. Called from another thread: the owner's read then ends."""
        with self._state:
            if self._idle_since is None or self._evicted:
                return False
            self._evicted = True
        if not isinstance(self.sock, ssl.SSLSocket):  # an SSL object is not shared by threads
            with contextlib.suppress(OSError):
                self.sock.sendall(bytes((A_ABORT, 0, 0, 0, 0, 4, 0, 0, 0x02,
                                         ABORT_NOT_SPECIFIED)))
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        return True

    def _abort(self, reason: int) -> None:
        self._drop_incoming()  # before the peer can see the abort
        try:
            self.sock.settimeout(1.0)
            self.sock.sendall(bytes((A_ABORT, 0, 0, 0, 0, 4, 0, 0, 0x02, reason)))
        except OSError:
            pass


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
