"""The header of a series' first instance, kept at receive time for completion and routing.

The receiver has the encoded dataset at hand (mapped, or inflated once); taking the top-level
elements routing can use from it there means completion never reads an instance file again,
and never inflates a deflated one again. Bounded: a value longer than ``MAX_VALUE`` and
binary values are left out (routing treats binary values and sequences as missing anyway),
and at most ``MAX_TOTAL`` bytes of values are kept. Sequences are stepped over by the same
allocation-free walk that checked the dataset, never parsed into objects.
"""

from __future__ import annotations

import json
import logging

from node.receiver.spool import Spool
from node.receiver.structure import _UNDEFINED, _Walker
from node.routing.facts import FACTS_FILE, header_record

log = logging.getLogger("radnode.receiver")

MAX_VALUE = 16 << 10
MAX_TOTAL = 256 << 10
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "SQ"}
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
             b"UV"}


def top_level_elements(
    data: bytes | memoryview, implicit_vr: bool, little_endian: bool,
) -> list[tuple[int, str | None, bytes]]:
    """(tag, VR, value) of the top-level elements before the pixel data that routing may use.

    ``data`` must have passed ``check_encoding`` (so every length fits)."""
    view = memoryview(data)
    walker = _Walker(view, implicit_vr, "<" if little_endian else ">", frozenset())
    out: list[tuple[int, str | None, bytes]] = []
    pos, end, total = 0, len(view), 0
    while pos + 8 <= end:
        group, elem, length = walker.tag_length.unpack_from(view, pos)
        if group >= 0x7FE0:  # pixel data and what follows it
            break
        tag = (group << 16) | elem
        vr: str | None = None
        raw_vr = b""
        if implicit_vr:
            pos += 8
        else:
            group, elem, raw_vr, length = walker.tag_vr_short.unpack_from(view, pos)
            vr = raw_vr.decode("ascii", errors="replace")
            if raw_vr in _LONG_VRS:
                (length,) = walker.long.unpack_from(view, pos + 8)
                pos += 12
            else:
                pos += 8
        if length == _UNDEFINED:
            pos = walker.undefined(pos, end, tag, raw_vr, 0)
            continue
        if (elem != 0 and length <= MAX_VALUE and vr not in _BINARY_VRS
                and total + length <= MAX_TOTAL):
            out.append((tag, vr, bytes(view[pos:pos + length])))
            total += length
        pos += length
    return out


def series_record(spool: Spool, folder: str, data: bytes | memoryview, implicit_vr: bool,
                  little_endian: bool) -> bytes | None:
    """The header record to keep for a series (``folder`` is ``<study>/<series>``), or None
    when it has one already. Never raises: without a record, completion reads an instance."""
    try:
        if spool.absolute(f"{folder}/{FACTS_FILE}").exists():
            return None
        record = header_record(top_level_elements(data, implicit_vr, little_endian),
                               implicit_vr, little_endian)
        return json.dumps(record).encode("ascii")
    except Exception as exc:
        log.warning("series %s: its header could not be read for routing (%s); completion "
                    "will read an instance", folder.rpartition("/")[2], type(exc).__name__)
        return None


def keep_series_record(spool: Spool, folder: str, record: bytes) -> None:
    """Write a series' header record durably (atomic rename), once an instance of the series
    is stored. Never raises; a concurrent writer of the same series writes the same kind of
    record, so whichever rename comes last is as good."""
    try:
        if not spool.absolute(f"{folder}/{FACTS_FILE}").exists():
            spool.write(f"{folder}/{FACTS_FILE}", record)
    except Exception as exc:
        log.warning("series %s: its header could not be kept for routing (%s); completion "
                    "will read an instance", folder.rpartition("/")[2], type(exc).__name__)
