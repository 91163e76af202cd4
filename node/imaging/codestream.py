"""The image size a compressed frame declares, read from its header before any decoding.

A decoder allocates what the codestream declares, whatever Rows and Columns say: a few hundred
bytes of JPEG or JPEG 2000 can claim 65535 x 65535 pixels (a decompression bomb). Reading the
declared size first lets the loader refuse such a frame without calling the decoder.
"""

from __future__ import annotations

import struct

_SOC_SIZ = b"\xff\x4f\xff\x51"  # JPEG 2000 / HTJ2K: start of codestream, then SIZ
_SOI = b"\xff\xd8"
# JPEG start-of-frame markers (all processes) and JPEG-LS SOF55; not DHT, JPG or DAC.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}
_NO_LENGTH = frozenset(range(0xD0, 0xD8)) | {0x01}
_SCAN_LIMIT = 1 << 20  # headers come first: give up after this many bytes


def declared_size(frame: bytes | memoryview) -> tuple[int, int] | None:
    """(rows, columns) that a JPEG, JPEG-LS or JPEG 2000 frame declares; None when the frame
    is none of these or its header does not say (then the decoder's own checks apply)."""
    data = bytes(frame[:_SCAN_LIMIT])
    at = data.find(_SOC_SIZ)  # a bare codestream, or one inside a JP2 box
    if at != -1 and len(data) >= at + 24:
        x, y, x0, y0 = struct.unpack_from(">LLLL", data, at + 8)
        return (y - y0, x - x0) if x > x0 and y > y0 else None  # nonsense: the decoder says
    if data.startswith(_SOI):
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _NO_LENGTH:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in _SOF:
            if pos + 9 > len(data):
                return None
            rows, columns = struct.unpack_from(">HH", data, pos + 5)
            return (rows, columns) if rows else None  # 0: height set later by a DNL marker
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None
