"""A structural check of an encoded dataset, picking out a few top-level values on the way.

pydicom reads leniently: a value shorter than its length field is silently cut. The receiver
must not store such a dataset as if it were whole, so it walks the encoding first. The walk
reads only tags and lengths (and the values asked for), never pixel data, so it is cheap even
for large objects, and it replaces a full parse on the receiver's hot path.
"""

from __future__ import annotations

import struct

from node.errors import NodeError

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
             b"UV"}
_MAX_DEPTH = 32


class MalformedDatasetError(NodeError, ValueError):
    """The encoding is broken; the message says where, never what the values are."""


def check_encoding(
    data: bytes | memoryview, implicit_vr: bool, little_endian: bool,
    wanted: frozenset[int] = frozenset(),
) -> dict[int, bytes]:
    """Raise :class:`MalformedDatasetError` unless ``data`` is a whole, well-formed dataset.

    Returns the raw values of the top-level elements whose tags are in ``wanted``.
    """
    walker = _Walker(memoryview(data), implicit_vr, "<" if little_endian else ">", wanted)
    end = walker.dataset(0, len(data), depth=0)
    if end != len(data):
        raise MalformedDatasetError(f"unexpected delimiter at byte {end}")
    return walker.found


class _Walker:
    def __init__(self, data: memoryview, implicit_vr: bool, endian: str,
                 wanted: frozenset[int]) -> None:
        self.data = data
        self.wanted = wanted
        self.found: dict[int, bytes] = {}
        self.implicit = implicit_vr
        self.tag_length = struct.Struct(endian + "HHL")
        self.tag_vr_short = struct.Struct(endian + "HH2sH")
        self.long = struct.Struct(endian + "L")

    def dataset(self, pos: int, end: int, depth: int) -> int:
        """Walk elements from ``pos`` to ``end`` (or an item delimiter); return where it ended."""
        if depth > _MAX_DEPTH:
            raise MalformedDatasetError("sequences nested too deeply")
        while pos < end:
            if pos + 8 > end:
                raise MalformedDatasetError(f"truncated element header at byte {pos}")
            group, elem, length = self.tag_length.unpack_from(self.data, pos)
            tag = (group << 16) | elem
            if tag == _ITEM_END:
                return pos + 8
            vr = b""
            if self.implicit or group == 0xFFFE:
                pos += 8
            else:
                group, elem, vr, length = self.tag_vr_short.unpack_from(self.data, pos)
                if vr in _LONG_VRS:
                    if pos + 12 > end:
                        raise MalformedDatasetError(f"truncated element header at byte {pos}")
                    (length,) = self.long.unpack_from(self.data, pos + 8)
                    pos += 12
                else:
                    pos += 8
            if length == _UNDEFINED:
                pos = self.undefined(pos, end, tag, vr, depth)
                continue
            if pos + length > end:
                raise MalformedDatasetError(
                    f"element ({group:04X},{elem:04X}) claims {length} bytes; "
                    f"{end - pos} remain"
                )
            if depth == 0 and tag in self.wanted:
                self.found[tag] = bytes(self.data[pos:pos + length])
            if vr == b"SQ":
                self.defined(pos, pos + length, depth)
            pos += length
        return pos

    def defined(self, pos: int, end: int, depth: int) -> None:
        """A sequence of defined length: its items must fill it exactly."""
        while pos < end:
            if pos + 8 > end:
                raise MalformedDatasetError(f"truncated item header at byte {pos}")
            group, elem, length = self.tag_length.unpack_from(self.data, pos)
            if (group << 16) | elem != _ITEM:
                raise MalformedDatasetError(f"expected an item at byte {pos}")
            pos += 8
            if length == _UNDEFINED:
                pos = self.dataset(pos, end, depth + 1)
            elif pos + length > end:
                raise MalformedDatasetError(f"item claims {length} bytes; {end - pos} remain")
            else:
                self.dataset(pos, pos + length, depth + 1)
                pos += length

    def undefined(self, pos: int, end: int, tag: int, vr: bytes, depth: int) -> int:
        """A sequence (or encapsulated pixel data) of undefined length: walk its items."""
        while True:
            if pos + 8 > end:
                raise MalformedDatasetError(f"sequence ({tag >> 16:04X},{tag & 0xFFFF:04X}) "
                                       "has no end delimiter")
            group, elem, length = self.tag_length.unpack_from(self.data, pos)
            item_tag = (group << 16) | elem
            pos += 8
            if item_tag == _SEQUENCE_END:
                return pos
            if item_tag != _ITEM:
                raise MalformedDatasetError(f"expected an item at byte {pos - 8}")
            if length == _UNDEFINED:
                pos = self.dataset(pos, end, depth + 1)
            elif pos + length > end:
                raise MalformedDatasetError(f"item claims {length} bytes; {end - pos} remain")
            else:
                if vr == b"SQ" or (self.implicit and tag != 0x7FE00010):
                    self.dataset(pos, pos + length, depth + 1)
                pos += length
