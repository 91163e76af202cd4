"""Is a NIfTI file whole? SimpleITK (ITK's NIfTI reader) fills a truncated file with zeros
instead of failing, so the node checks the size the header promises before trusting the voxels.

Only the header is read (NIfTI-1 and NIfTI-2, either byte order), through nibabel's header
classes. For gzip files the trailer (uncompressed size mod 2**32) answers at once; when it
disagrees (a truncated file, or a multi-member gzip) the stream is decompressed once to count its
bytes.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import nibabel as nib

from node.imaging.errors import VolumeError

_HEADERS = (nib.Nifti1Header, nib.Nifti2Header)
_NIFTI2 = nib.Nifti2Header.template_dtype.itemsize  # 540 bytes, the larger header
_CHUNK = 1 << 22

__all__ = ["check_nifti_complete"]


def check_nifti_complete(path: str | Path) -> None:
    """Raise VolumeError unless the file holds every voxel byte its header declares."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            # By content: ITK (zlib's gzopen) also reads a plain file named .nii.gz ...
            compressed = fh.read(2) == b"\x1f\x8b"
        if compressed and not path.name.lower().endswith(".gz"):  # ... but not a gzip .nii
            raise VolumeError("the NIfTI file could not be read: its content is gzip-compressed "
                              "but its name does not end in .gz")
        if compressed:
            with gzip.open(path, "rb") as fh:
                header = fh.read(_NIFTI2)
        else:
            with open(path, "rb") as fh:
                header = fh.read(_NIFTI2)
        expected = _expected_bytes(header)
        if expected is None:
            raise VolumeError("the NIfTI file could not be read: no NIfTI-1 or NIfTI-2 header")
        if compressed:
            complete = _gzip_size_matches(path, expected) or _gzip_size(path) >= expected
        else:
            complete = path.stat().st_size >= expected
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise VolumeError("the NIfTI file could not be read: truncated, or not a valid NIfTI "
                          "file") from exc
    if not complete:
        raise VolumeError("the NIfTI file could not be read: truncated (fewer voxel bytes than "
                          "its header declares)")


def _expected_bytes(header: bytes) -> int | None:
    """vox_offset + voxel bytes from a NIfTI-1/2 header, or None if it is not one."""
    for kind in _HEADERS:
        size = kind.template_dtype.itemsize  # the header's own length, in its sizeof_hdr
        if len(header) < size:
            continue
        for order in "<>":
            fields = kind(header[:size], endianness=order, check=False)
            if int(fields["sizeof_hdr"]) == size:
                return _total(tuple(int(n) for n in fields["dim"]), int(fields["bitpix"]),
                              max(int(fields["vox_offset"]), size))
    return None


def _total(dims: tuple[int, ...], bitpix: int, offset: int) -> int | None:
    rank = dims[0]
    if not 1 <= rank <= 7 or bitpix <= 0:
        return None
    voxels = 1
    for n in dims[1:rank + 1]:
        voxels *= max(int(n), 1)
    return offset + voxels * bitpix // 8


def _gzip_size_matches(path: Path, expected: int) -> bool:
    """The gzip trailer's ISIZE (last 4 bytes: uncompressed size mod 2**32) equals ``expected``."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        if fh.tell() < 18:  # header (10) + trailer (8)
            return False
        fh.seek(-4, 2)
        return struct.unpack("<I", fh.read(4))[0] == expected % (1 << 32)


def _gzip_size(path: Path) -> int:
    """The uncompressed size; raises EOFError when the stream ends early."""
    total = 0
    with gzip.open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            total += len(chunk)
    return total
