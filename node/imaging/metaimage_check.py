"""Is a MetaImage file (.mha, .mhd) whole? Checked before ITK reads it because ITK's MetaIO
writes its complaints about a bad file to stderr (several lines, beside the node's one-line
reason) before failing.

The text header is parsed for what the size check needs (NDims, DimSize, ElementType, channels,
compression, ElementDataFile); the voxel bytes (after the header for LOCAL data, or the file it
names) must be at least what the header declares. ASCII data, compressed data without
CompressedDataSize, and data split over several files are left to ITK.
"""

from __future__ import annotations

import math
from pathlib import Path

from node.imaging.errors import VolumeError

_HEADER_LIMIT = 1 << 16  # no MetaImage header is longer; binary junk stops the parse sooner
_ELEMENT_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}
_BAD = "the MetaImage file could not be read: "

__all__ = ["check_metaimage_complete"]


def check_metaimage_complete(path: str | Path) -> None:
    """Raise VolumeError unless the header is a MetaImage image header and the voxel bytes it
    declares are all there."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEADER_LIMIT)
        fields, data_offset = _header(head)
        if not fields:
            raise VolumeError(_BAD + "not a valid MetaImage file (no header)")
        for key in ("NDims", "DimSize", "ElementType", "ElementDataFile"):
            if key not in fields:
                raise VolumeError(_BAD + f"not a valid MetaImage file (no {key} in the header)")
        expected = _expected_bytes(fields)
        if expected is None:
            return  # ASCII, or a layout the size check does not cover: ITK decides
        data_file = fields["ElementDataFile"]
        if data_file.upper() == "LOCAL":
            available = path.stat().st_size - data_offset
        elif " " in data_file or data_file.upper() == "LIST":
            return  # data split over several files
        else:
            detached = path.parent / data_file
            if not detached.is_file():
                raise VolumeError(_BAD + "its data file (ElementDataFile) is missing")
            available = detached.stat().st_size
    except OSError as exc:
        raise VolumeError(_BAD + (exc.strerror or "unreadable")) from exc
    if available < expected:
        raise VolumeError(_BAD + "truncated (fewer voxel bytes than its header declares)")


def _header(head: bytes) -> tuple[dict[str, str], int]:
    """``Key = Value`` lines up to and including ElementDataFile, and where the data starts."""
    fields: dict[str, str] = {}
    offset = 0
    for raw in head.splitlines(keepends=True):
        offset += len(raw)
        line = raw.decode("ascii", errors="replace").strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().replace("_", "").isalnum():
            return {}, 0
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            return fields, offset
    return fields, offset


def _expected_bytes(fields: dict[str, str]) -> int | None:
    """The voxel bytes the header declares on disk, or None when it cannot say."""
    try:
        ndims = int(fields["NDims"])
        dims = [int(v) for v in fields["DimSize"].split()][:ndims]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
    except ValueError:
        raise VolumeError(_BAD + "not a valid MetaImage file (bad NDims or DimSize)") from None
    if len(dims) != ndims or any(n <= 0 for n in dims):
        raise VolumeError(_BAD + "not a valid MetaImage file (bad NDims or DimSize)")
    if fields.get("BinaryData", "True").lower() not in ("true", "1"):
        return None
    if fields.get("CompressedData", "False").lower() in ("true", "1"):
        size = fields.get("CompressedDataSize")
        return int(size) if size and size.isdigit() else None
    element = _ELEMENT_BYTES.get(fields["ElementType"].upper())
    if element is None:
        return None
    return math.prod(dims) * channels * element
