"""Association negotiation as the acceptor (PS3.8 section 7.1 and annex D).

The A-ASSOCIATE-RQ is decoded here, in one bounded pass, before anything else sees it: its
items are checked against the PDU's length, AE titles must be ASCII, at most 128 presentation
contexts (the odd IDs 1 to 255) with at most ``MAX_TRANSFER_SYNTAXES`` each are read, and UIDs
that are not valid are replaced by a placeholder that no context supports, so a hostile request
costs microseconds and at most one log line instead of a warning per UID from pydicom and
pynetdicom. The presentation-context rules themselves (and the A-ASSOCIATE-AC) stay pynetdicom's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from node.errors import NodeError
from node.receiver.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from node.uids import is_valid_uid

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"

# A-ASSOCIATE-RJ (result, source, reason), PS3.8 table 9-21. Result 1 is permanent, 2 transient;
# source 1 is the service user, 2 the service provider (ACSE), 3 the service provider
# (presentation).
REJECT_NO_REASON = (0x01, 0x01, 0x01)
REJECT_APPLICATION_CONTEXT = (0x01, 0x01, 0x02)
REJECT_CALLING_AE_TITLE = (0x01, 0x01, 0x03)
REJECT_CALLED_AE_TITLE = (0x01, 0x01, 0x07)
REJECT_PROTOCOL_VERSION = (0x01, 0x02, 0x02)
REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)  # transient: too many associations or connections
REJECT_REQUEST_TOO_LARGE = (0x01, 0x03, 0x02)  # permanent: a request beyond the node's limits

MAX_CONTEXTS = 128  # context IDs are the odd numbers 1 to 255 (PS3.8 9.3.2.2)
MAX_TRANSFER_SYNTAXES = 64  # per context; DICOM defines about 40 transfer syntaxes in all
PLACEHOLDER_UID = "0.0"  # stands in for an invalid UID: valid, and supported by nothing

_ITEM = struct.Struct(">BBH")
_FIXED = 68  # protocol version, reserved, called and calling AE titles, reserved (PS3.8 9-11)


class NegotiationError(NodeError, ValueError):
    """An A-ASSOCIATE-RQ that breaks the standard: answered with an A-ABORT."""


class RequestRefusedError(NodeError, ValueError):
    """An A-ASSOCIATE-RQ that is well formed enough to answer with an A-ASSOCIATE-RJ."""

    def __init__(self, message: str, rejection: tuple[int, int, int]) -> None:
        super().__init__(message)
        self.rejection = rejection


@dataclass
class AssociationRequest:
    """What the requestor asked for, as the handlers see it."""

    calling_ae_title: str
    called_ae_title: str
    address: str
    port: int
    application_context_name: str
    max_pdu_length: int  # the largest PDU the requestor receives; 0 means no limit
    contexts: list[PresentationContext] = field(default_factory=list)
    roles: dict[str, tuple[bool | None, bool | None]] = field(default_factory=dict)
    invalid_uids: int = 0  # UIDs replaced by PLACEHOLDER_UID


def read_request(pdu: bytes, address: str, port: int) -> AssociationRequest:
    """Decode a whole A-ASSOCIATE-RQ PDU (header included); NegotiationError if it is
    malformed, RequestRefusedError if it is readable but refused before negotiation."""
    body = memoryview(pdu)[6:]
    if len(body) < _FIXED:
        raise NegotiationError(f"A-ASSOCIATE-RQ of {len(body)} bytes, shorter than its fixed "
                               "fields")
    if not struct.unpack_from(">H", body)[0] & 1:
        raise RequestRefusedError("protocol version 1 is not offered", REJECT_PROTOCOL_VERSION)
    called = _ae_title(bytes(body[4:20]), "called", REJECT_CALLED_AE_TITLE)
    calling = _ae_title(bytes(body[20:36]), "calling", REJECT_CALLING_AE_TITLE)
    request = AssociationRequest(calling_ae_title=calling, called_ae_title=called,
                                 address=address, port=port, application_context_name="",
                                 max_pdu_length=0)
    seen_ids: set[int] = set()
    for item_type, value in _items(body[_FIXED:], "A-ASSOCIATE-RQ"):
        if item_type == 0x10:
            name = _text(value)
            request.application_context_name = name if name and is_valid_uid(name) else ""
        elif item_type == 0x20:
            request.contexts.append(_context(value, seen_ids, request))
        elif item_type == 0x50:
            _user_information(value, request)
        # other item types are reserved: ignored
    if not request.contexts:
        raise NegotiationError("A-ASSOCIATE-RQ without a presentation context")
    return request


def _items(data: memoryview, where: str) -> list[tuple[int, memoryview]]:
    """The (type, value) items of a variable field; NegotiationError if one overruns it."""
    items, pos = [], 0
    while pos < len(data):
        if pos + _ITEM.size > len(data):
            raise NegotiationError(f"{where}: an item header is cut off")
        item_type, _, length = _ITEM.unpack_from(data, pos)
        pos += _ITEM.size
        if pos + length > len(data):
            raise NegotiationError(f"{where}: item 0x{item_type:02X} claims {length} bytes; "
                                   f"{len(data) - pos} remain")
        items.append((item_type, data[pos:pos + length]))
        pos += length
    return items


def _text(value: memoryview | bytes) -> str | None:
    """An ASCII value without its padding; None if it holds anything else."""
    raw = bytes(value).strip(b" \0")
    if any(b < 0x20 or b > 0x7E for b in raw):
        return None
    return raw.decode("ascii")


def _uid(value: memoryview, request: AssociationRequest) -> str:
    text = _text(value)
    if text is not None and is_valid_uid(text):
        return text
    request.invalid_uids += 1
    return PLACEHOLDER_UID


def _ae_title(raw: bytes, which: str, rejection: tuple[int, int, int]) -> str:
    """An AE title (PS3.5: default repertoire, no backslash or control characters)."""
    text = _text(raw)
    if not text or "\\" in text:
        shown = raw.rstrip(b" \0")
        raise RequestRefusedError(f"{which} AE title {ascii(shown)[1:]} is not 1 to 16 "
                                  "printable ASCII characters", rejection)
    return text


def _context(value: memoryview, seen_ids: set[int],
             request: AssociationRequest) -> PresentationContext:
    if len(request.contexts) >= MAX_CONTEXTS:
        raise NegotiationError(f"more than {MAX_CONTEXTS} presentation contexts")
    if len(value) < 4:
        raise NegotiationError("presentation context item shorter than 4 bytes")
    context_id = value[0]
    if context_id % 2 == 0 or context_id in seen_ids:
        raise NegotiationError(f"presentation context ID {context_id} is even or repeated")
    seen_ids.add(context_id)
    abstract: str | None = None
    syntaxes: list[str] = []
    proposed = 0
    for item_type, sub in _items(value[4:], f"presentation context {context_id}"):
        if item_type == 0x30:
            if abstract is not None:
                raise NegotiationError(f"presentation context {context_id} has two abstract "
                                       "syntaxes")
            abstract = _uid(sub, request)
        elif item_type == 0x40:
            proposed += 1
            if proposed > MAX_TRANSFER_SYNTAXES:
                raise RequestRefusedError(f"presentation context {context_id} proposes more "
                                          f"than {MAX_TRANSFER_SYNTAXES} transfer syntaxes",
                                          REJECT_REQUEST_TOO_LARGE)
            syntax = _uid(sub, request)
            if syntax not in syntaxes:
                syntaxes.append(syntax)
    if abstract is None or not syntaxes:
        raise NegotiationError(f"presentation context {context_id} lacks its abstract or "
                               "transfer syntax")
    if len(syntaxes) > 1 and PLACEHOLDER_UID in syntaxes:
        syntaxes.remove(PLACEHOLDER_UID)
    context = PresentationContext()
    context.context_id = context_id
    context.abstract_syntax = UID(abstract)
    for syntax in syntaxes:
        context.add_transfer_syntax(UID(syntax))
    return context


def _user_information(value: memoryview, request: AssociationRequest) -> None:
    """Maximum length and SCP/SCU role selection: the sub-items the node negotiates."""
    for item_type, sub in _items(value, "user information"):
        if item_type == 0x51:
            if len(sub) != 4:
                raise NegotiationError("maximum length sub-item is not 4 bytes")
            request.max_pdu_length = struct.unpack(">L", sub)[0]
        elif item_type == 0x54 and len(sub) >= 4:
            (length,) = struct.unpack_from(">H", sub)
            if 2 + length + 2 != len(sub):
                raise NegotiationError("role selection sub-item lengths disagree")
            uid = _uid(sub[2:2 + length], request)
            if uid != PLACEHOLDER_UID:
                request.roles[uid] = (bool(sub[-2]), bool(sub[-1]))
        # other sub-items (asynchronous operations, identity, extended negotiation...) are not
        # negotiated: no reply means "not supported" (PS3.7 annex D)


def accept(
    request: AssociationRequest, supported: list[PresentationContext], max_pdu_length: int
) -> tuple[bytes, dict[int, PresentationContext]]:
    """The A-ASSOCIATE-AC PDU and the accepted contexts by ID."""
    results, role_items = negotiate_as_acceptor(
        request.contexts, supported, request.roles or None  # type: ignore[arg-type]
    )
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID(APPLICATION_CONTEXT_NAME)
    primitive.calling_ae_title = request.calling_ae_title
    primitive.called_ae_title = request.called_ae_title
    primitive.result = 0x00
    primitive.result_source = 0x01
    primitive.presentation_context_definition_results_list = results
    length = MaximumLengthNotification()
    length.maximum_length_received = max_pdu_length
    class_uid = ImplementationClassUIDNotification()
    class_uid.implementation_class_uid = UID(IMPLEMENTATION_CLASS_UID)
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    primitive.user_information = [length, class_uid, version, *role_items]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(primitive)
    accepted = {int(cx.context_id): cx for cx in results
                if cx.result == 0x00 and cx.context_id is not None}
    return pdu.encode(), accepted


def reject(result: int, source: int, reason: int) -> bytes:
    """An A-ASSOCIATE-RJ PDU."""
    primitive = A_ASSOCIATE()
    primitive.result = result
    primitive.result_source = source
    primitive.diagnostic = reason
    pdu = A_ASSOCIATE_RJ()
    pdu.from_primitive(primitive)
    return pdu.encode()
