"""The DICOM file header (PS3.10 7.1): preamble, "DICM" and the File Meta Information group.

Written by hand because the receiver stores every instance and pydicom's general encoder is the
larger cost of a C-STORE; the tests check the result against pydicom's reading.
"""

from __future__ import annotations

import struct

from node import __version__

IMPLEMENTATION_CLASS_UID = "2.25.64257673164924329824083137008017990784"
IMPLEMENTATION_VERSION_NAME = ("RADNODE_" + __version__.replace(".", ""))[:16]


def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2s2xL", group, elem, vr, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def encode_uid(value: str) -> bytes:
    """A UI value padded to even length with NUL (PS3.5 6.2); a character that is not ASCII
    (only in a request that is then refused) becomes '?'."""
    raw = value.encode("ascii", errors="replace")
    return raw + b"\0" if len(raw) % 2 else raw


def decode_text(raw: bytes | memoryview) -> str:
    """An ASCII value (UI, CS, AE) without its padding."""
    return bytes(raw).decode("ascii", errors="replace").strip("\0 ")


def _text(value: str) -> bytes:
    raw = value.encode("ascii", errors="replace")
    return raw + b" " if len(raw) % 2 else raw


def file_header(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str,
                source_ae_title: str = "") -> bytes:
    """Preamble, prefix and File Meta Information for a dataset stored as received."""
    body = b"".join((
        _element(2, 0x0001, b"OB", b"\x00\x01"),
        _element(2, 0x0002, b"UI", encode_uid(sop_class_uid)),
        _element(2, 0x0003, b"UI", encode_uid(sop_instance_uid)),
        _element(2, 0x0010, b"UI", encode_uid(transfer_syntax_uid)),
        _element(2, 0x0012, b"UI", encode_uid(IMPLEMENTATION_CLASS_UID)),
        _element(2, 0x0013, b"SH", _text(IMPLEMENTATION_VERSION_NAME)),
        _element(2, 0x0016, b"AE", _text(source_ae_title)) if source_ae_title else b"",
    ))
    length = _element(2, 0x0000, b"UL", struct.pack("<L", len(body)))
    return b"\0" * 128 + b"DICM" + length + body
