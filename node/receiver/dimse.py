"""DIMSE command sets (PS3.7 section 6.3 and E.1): read a request, write a response.

Command sets are always implicit VR little endian and hold a handful of group 0000 elements,
so a small reader of exactly those replaces pydicom's general decoder on the hot path.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from node.errors import NodeError
from node.receiver.part10 import decode_text, encode_uid

C_STORE_RQ = 0x0001
C_ECHO_RQ = 0x0030
C_CANCEL_RQ = 0x0FFF
NO_DATASET = 0x0101
UNRECOGNIZED_OPERATION = 0x0211  # PS3.7 C.4.3: the service does not support the command

_ELEMENT = struct.Struct("<HHL")
_US = struct.Struct("<H")

_AFFECTED_SOP_CLASS = 0x0002
_COMMAND_FIELD = 0x0100
_MESSAGE_ID = 0x0110
_MESSAGE_ID_BEING_RESPONDED_TO = 0x0120
_COMMAND_DATASET_TYPE = 0x0800
_STATUS = 0x0900
_AFFECTED_SOP_INSTANCE = 0x1000


class CommandError(NodeError, ValueError):
    """A command set that cannot be read; the association is aborted."""


@dataclass(frozen=True)
class Command:
    """The elements of a request that the receiver acts on."""

    command_field: int
    message_id: int
    has_dataset: bool
    affected_sop_class_uid: str = ""
    affected_sop_instance_uid: str = ""


def read_command(data: bytes | bytearray | memoryview) -> Command:
    """Parse a command set; raises :class:`CommandError` if it is malformed or incomplete."""
    view = memoryview(data)
    pos, end = 0, len(view)
    values: dict[int, memoryview] = {}
    while pos < end:
        if pos + 8 > end:
            raise CommandError(f"truncated command element at byte {pos}")
        group, elem, length = _ELEMENT.unpack_from(view, pos)
        pos += 8
        if group != 0x0000:
            raise CommandError(f"element ({group:04X},{elem:04X}) outside the command group")
        if pos + length > end:
            raise CommandError(f"command element (0000,{elem:04X}) claims {length} bytes")
        values[elem] = view[pos:pos + length]
        pos += length
    for required in (_COMMAND_FIELD, _COMMAND_DATASET_TYPE):
        if required not in values or len(values[required]) != 2:
            raise CommandError(f"command set lacks (0000,{required:04X})")
    message_id = values.get(_MESSAGE_ID)
    return Command(
        command_field=_US.unpack(values[_COMMAND_FIELD])[0],
        message_id=_US.unpack(message_id)[0] if message_id is not None and len(message_id) == 2
        else 0,
        has_dataset=_US.unpack(values[_COMMAND_DATASET_TYPE])[0] != NO_DATASET,
        affected_sop_class_uid=_text(values.get(_AFFECTED_SOP_CLASS)),
        affected_sop_instance_uid=_text(values.get(_AFFECTED_SOP_INSTANCE)),
    )


def response(request: Command, status: int) -> bytes:
    """The response command set to ``request`` (its field with bit 15 set), with no dataset."""
    elements = []
    if request.affected_sop_class_uid:
        elements.append(_element(_AFFECTED_SOP_CLASS, encode_uid(request.affected_sop_class_uid)))
    elements += [
        _element(_COMMAND_FIELD, _US.pack(request.command_field | 0x8000)),
        _element(_MESSAGE_ID_BEING_RESPONDED_TO, _US.pack(request.message_id)),
        _element(_COMMAND_DATASET_TYPE, _US.pack(NO_DATASET)),
        _element(_STATUS, _US.pack(status)),
    ]
    if request.affected_sop_instance_uid:
        elements.append(_element(_AFFECTED_SOP_INSTANCE,
                                 encode_uid(request.affected_sop_instance_uid)))
    body = b"".join(elements)
    return _element(0x0000, struct.pack("<L", len(body))) + body


def _element(elem: int, value: bytes) -> bytes:
    return _ELEMENT.pack(0x0000, elem, len(value)) + value


def _text(raw: memoryview | None) -> str:
    return "" if raw is None else decode_text(raw)
