"""Association negotiation as the acceptor (PS3.8 section 7.1 and annex D), with pynetdicom's
PDU classes and its presentation-context negotiation, so the rules are pynetdicom's own."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from node.receiver.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"

# A-ASSOCIATE-RJ (result, source, reason), PS3.8 table 9-21.
REJECT_NO_REASON = (0x01, 0x01, 0x01)
REJECT_APPLICATION_CONTEXT = (0x01, 0x01, 0x02)
REJECT_CALLING_AE_TITLE = (0x01, 0x01, 0x03)
REJECT_CALLED_AE_TITLE = (0x01, 0x01, 0x07)
REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)  # transient: too many associations


class NegotiationError(ValueError):
    """An A-ASSOCIATE-RQ that cannot be decoded."""


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


def read_request(pdu: bytes, address: str, port: int) -> AssociationRequest:
    """Decode a whole A-ASSOCIATE-RQ PDU (header included)."""
    try:
        decoded = A_ASSOCIATE_RQ()
        decoded.decode(pdu)
        primitive = decoded.to_primitive()
    except Exception as exc:  # pynetdicom raises whatever its decoders meet
        raise NegotiationError(f"undecodable A-ASSOCIATE-RQ ({type(exc).__name__})") from exc
    max_length = 0
    roles: dict[str, tuple[bool | None, bool | None]] = {}
    for item in primitive.user_information:
        if isinstance(item, MaximumLengthNotification):
            max_length = int(item.maximum_length_received)
        elif isinstance(item, SCP_SCU_RoleSelectionNegotiation) and item.sop_class_uid:
            roles[str(item.sop_class_uid)] = (item.scu_role, item.scp_role)
    return AssociationRequest(
        calling_ae_title=str(primitive.calling_ae_title).strip(),
        called_ae_title=str(primitive.called_ae_title).strip(),
        address=address,
        port=port,
        application_context_name=str(primitive.application_context_name or ""),
        max_pdu_length=max_length,
        contexts=list(primitive.presentation_context_definition_list),
        roles=roles,
    )


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
