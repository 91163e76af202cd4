"""C-STORE SCU: a batch of objects to one destination over one association.

Files are read with pydicom and sent as datasets (``dcmread`` keeps the stored encoding and any
encapsulated pixel data byte for byte; pynetdicom re-encodes only between uncompressed syntaxes
when the peer asks for one). We do not use ``_config.STORE_SEND_CHUNKED_DATASET``: it is a
process-wide switch that other code (and the receiver's tests) flip, and chunked sending forbids
the explicit/implicit conversion a picky PACS may need. Result objects are small (SEG, SR), so
holding one in memory at a time costs little.

Failures are sorted into two kinds, because they call for different handling:

* the destination as a whole (cannot connect, association rejected or aborted, TLS handshake,
  association lost mid-batch) -> ``BatchResult.destination_error``; the untried objects are not
  charged an attempt;
* one object (a Failure status, no accepted presentation context for its SOP class, no response
  to its C-STORE) -> an :class:`Outcome` for that object. Warning statuses count as sent.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS, code_to_category

from node.sender.common import BatchResult, FileProblemError, Outcome, Outgoing, file_meta

log = logging.getLogger("radnode.sender")

MAX_CONTEXTS = 128  # presentation contexts one association can propose (odd ids 1..255)
_UNCOMPRESSED = {
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.2",  # explicit VR big endian (retired)
}


@dataclass(frozen=True)
class DicomTarget:
    ae_title: str
    host: str
    port: int
    tls: ssl.SSLContext | None = None

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}{' (TLS)' if self.tls else ''}"


ContextKey = tuple[str, tuple[str, ...]]  # (SOP class, transfer syntaxes offered)


def context_for(sop_class: str, syntax: str) -> ContextKey:
    """The presentation context an object needs: an uncompressed file may go as explicit or
    implicit little endian (pydicom re-encodes); a compressed one only in its own syntax."""
    if syntax in _UNCOMPRESSED:
        offered = dict.fromkeys([syntax, ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        return sop_class, tuple(offered)
    return sop_class, (syntax,)


OnOutcome = Callable[[Outgoing, Outcome], None]


def send_dicom(target: DicomTarget, objects: list[Outgoing], *, calling_ae: str,
               timeout: float, on_outcome: OnOutcome | None = None) -> BatchResult:
    """Send ``objects`` to ``target``; one association per 128 distinct presentation contexts
    (in practice one per batch). ``on_outcome`` hears of each object as it is done."""
    result = BatchResult()
    sendable: list[tuple[Outgoing, ContextKey]] = []
    for obj in objects:
        try:
            sop_class, syntax = file_meta(obj)
        except FileProblemError as exc:
            result.outcomes[obj.item_id] = Outcome(False, str(exc), permanent=True)
            continue
        sendable.append((obj, context_for(sop_class, syntax)))
    for chunk in _chunks(sendable):
        _send_chunk(target, chunk, calling_ae, timeout, result, on_outcome)
        if result.destination_error:
            break
    return result


def _chunks(sendable: list[tuple[Outgoing, ContextKey]]
            ) -> Iterator[list[tuple[Outgoing, ContextKey]]]:
    keys = list(dict.fromkeys(key for _, key in sendable))
    for start in range(0, len(keys), MAX_CONTEXTS):
        chosen = set(keys[start:start + MAX_CONTEXTS])
        yield [(obj, key) for obj, key in sendable if key in chosen]


def _send_chunk(target: DicomTarget, chunk: list[tuple[Outgoing, ContextKey]], calling_ae: str,
                timeout: float, result: BatchResult, on_outcome: OnOutcome | None) -> None:
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = timeout
    for sop_class, syntaxes in dict.fromkeys(key for _, key in chunk):
        ae.add_requested_context(sop_class, list(syntaxes))
    tls_args = (target.tls, target.host) if target.tls is not None else None
    result.associations += 1
    connected: list[bool] = []
    rejections: list[A_ASSOCIATE] = []
    handlers: list[EventHandlerType] = [(evt.EVT_CONN_OPEN, lambda _: connected.append(True)),
                (evt.EVT_PDU_RECV, lambda event: _keep_rejection(event, rejections))]
    assoc = ae.associate(target.host, target.port, ae_title=target.ae_title, tls_args=tls_args,
                         evt_handlers=handlers)
    if not assoc.is_established:
        if _no_context_accepted(assoc):
            for obj, (sop_class, _) in chunk:
                result.outcomes[obj.item_id] = Outcome(
                    False, f"{target} accepts no presentation context for "
                           f"{UID(sop_class).name} ({sop_class})")
        else:
            result.destination_error = _association_failure(assoc, target, bool(connected),
                                                            rejections)
        return
    try:
        for number, (obj, _) in enumerate(chunk):
            if not assoc.is_established:
                result.destination_error = f"association with {target} was lost mid-batch"
                return
            outcome, lost = _store_one(assoc, obj, target, number % 65535 + 1)
            result.outcomes[obj.item_id] = outcome
            if on_outcome is not None:
                on_outcome(obj, outcome)
            if lost:  # this object is charged; the rest wait for the destination's back-off
                result.destination_error = outcome.detail
                return
    finally:
        if assoc.is_established:
            assoc.release()


def _store_one(assoc: Association, obj: Outgoing, target: DicomTarget,
               msg_id: int) -> tuple[Outcome, bool]:
    """One C-STORE; the flag says the association is gone (no response, abort, timeout)."""
    try:
        ds = dcmread(obj.path)
    except Exception as exc:  # any read problem makes the file unsendable
        problem = f"file {obj.path} is not readable DICOM: {exc}"
        return Outcome(False, problem, permanent=True), False
    try:
        status = assoc.send_c_store(ds, msg_id=msg_id)
    except ValueError as exc:  # no accepted context for this SOP class/syntax, or encoding
        return Outcome(False, f"{target} cannot take this object: {exc}"), False
    except (RuntimeError, OSError) as exc:
        return Outcome(False, f"no response from {target}: {exc}"), True
    outcome = status_outcome(status, target)
    return outcome, "Status" not in status


def status_outcome(status: Dataset, target: object) -> Outcome:
    """Success and Warning count as sent; anything else is a failure of this object."""
    if "Status" not in status:
        return Outcome(False, f"no response from {target} (DIMSE timeout or abort)")
    code = int(status.Status)
    category = code_to_category(code)
    described = STORAGE_SERVICE_CLASS_STATUS.get(code, (category, ""))[1]
    text = f"status 0x{code:04X} {category}{': ' + described if described else ''}"
    if "OffendingElement" in status:
        elements = status.OffendingElement
        elements = elements if isinstance(elements, list | tuple) else [elements]
        text += " (offending elements " + ", ".join(f"{int(t):08X}" for t in elements) + ")"
    if category == "Success":
        return Outcome(True)
    if category == "Warning":
        return Outcome(True, text)
    return Outcome(False, f"{target} answered {text}")


def _no_context_accepted(assoc: Association) -> bool:
    primitive = getattr(assoc.acceptor, "primitive", None)
    return (assoc.is_aborted and primitive is not None and getattr(primitive, "result", None) == 0
            and not assoc.accepted_contexts)


def _keep_rejection(event: evt.Event, rejections: list[A_ASSOCIATE]) -> None:
    if isinstance(event.pdu, A_ASSOCIATE_RJ):
        rejections.append(event.pdu.to_primitive())


def _association_failure(assoc: Association, target: DicomTarget, connected: bool,
                         rejections: list[A_ASSOCIATE]) -> str:
    """Why no association came up. A rejection is taken from the A-ASSOCIATE-RJ PDU itself:
    when the peer rejects and closes at once, pynetdicom 3.0 may see the closed socket before
    it hands the rejection on and report an abort (about 1 association in 4 against Orthanc)."""
    if not connected:
        return f"cannot connect to {target}: refused, unreachable or timed out" + (
            " (or the TLS handshake failed)" if target.tls else "")
    if rejections:  # pynetdicom decodes every A-ASSOCIATE-RJ (EVT_PDU_RECV) before it reports it
        rejection = rejections[0]
        return (f"association rejected by {target}: {rejection.result_str}, "
                f"source {rejection.source_str}, reason {rejection.reason_str}")
    if assoc.is_aborted:
        return f"association aborted by {target} during negotiation"
    return f"no association with {target}: no answer to the association request"
