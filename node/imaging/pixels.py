"""Pixel data of each frame, rescaled, straight into its slot of a preallocated float32 volume.

Uncompressed data is read from the file at the pixel data offset into one reusable buffer (no
pydicom decoding, no per-slice copies); compressed data goes through pydicom's decoders
(pylibjpeg: JPEG, JPEG-LS, JPEG 2000, RLE), one frame at a time.

MONOCHROME1 (higher stored value = darker, as on film) is inverted within the rescaled range of
the stored values, ``v' = lo + hi - v``, so that higher means brighter as with MONOCHROME2 and
the value range stays the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import iter_pixels
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from node.imaging.codestream import declared_size
from node.imaging.dicom_frames import PIXEL_DATA, DicomObject, Frame, integer, values
from node.imaging.errors import VolumeError

_NATIVE: dict[str, str] = {
    ImplicitVRLittleEndian: "<", ExplicitVRLittleEndian: "<", ExplicitVRBigEndian: ">",
}
_UNDEFINED_LENGTH = 0xFFFFFFFF


def fill(out: np.ndarray, obj: DicomObject, placed: Sequence[tuple[int, Frame]]) -> None:
    """Write the frames of one object into ``out[k]`` for each (k, frame) in ``placed``."""
    ds = obj.ds
    bits_allocated = integer(ds, "BitsAllocated") or 0
    bits_stored = integer(ds, "BitsStored") or bits_allocated
    signed = integer(ds, "PixelRepresentation") == 1
    monochrome1 = (values(ds, "PhotometricInterpretation") or [""])[0].upper() == "MONOCHROME1"
    raw = ds.get_item(PIXEL_DATA, keep_deferred=True)
    native = raw if (
        obj.transfer_syntax in _NATIVE
        and bits_allocated in (8, 16, 32)
        and isinstance(raw, RawDataElement)
        and raw.length != _UNDEFINED_LENGTH
    ) else None
    try:
        if native is not None:
            _fill_native(out, obj, native, placed, bits_allocated, bits_stored, signed)
        else:
            _fill_decoded(out, obj, placed)
    except VolumeError:
        raise
    except Exception as exc:  # decoders raise many types; the reason must not be lost
        raise VolumeError(f"pixel data could not be decoded ({type(exc).__name__}: {exc})") from exc
    for k, frame in placed:
        _rescale(out[k], frame.slope, frame.intercept)
        if monochrome1:
            lo, hi = _rescaled_range(bits_stored, signed, frame.slope, frame.intercept)
            np.subtract(lo + hi, out[k], out=out[k])
    # Decoded bytes are not needed again: let them go before the next object.
    if PIXEL_DATA in ds and not isinstance(ds.get_item(PIXEL_DATA, keep_deferred=True),
                                           RawDataElement):
        del ds[PIXEL_DATA]


def _fill_native(out: np.ndarray, obj: DicomObject, raw: RawDataElement,
                 placed: Sequence[tuple[int, Frame]], bits_allocated: int, bits_stored: int,
                 signed: bool) -> None:
    rows, columns = out.shape[1:]
    dtype = np.dtype(f"{_NATIVE[obj.transfer_syntax]}{'i' if signed else 'u'}{bits_allocated // 8}")
    frame_bytes = rows * columns * dtype.itemsize
    needed = (max(frame.frame_index for _, frame in placed) + 1) * frame_bytes
    if raw.length < needed:
        raise VolumeError(f"pixel data is short: {raw.length} bytes where {needed} are needed")
    buffer = np.empty((rows, columns), dtype=dtype)
    view = buffer.data.cast("B")
    if raw.value is not None:  # small enough that the header read kept it
        data = np.frombuffer(raw.value, dtype=dtype)
        for k, frame in placed:
            start = frame.frame_index * rows * columns
            buffer[...] = data[start : start + rows * columns].reshape(rows, columns)
            _store(out[k], buffer, bits_allocated, bits_stored, signed)
        return
    with open(obj.path, "rb", buffering=0) as fh:
        for k, frame in placed:
            fh.seek(raw.value_tell + frame.frame_index * frame_bytes)
            if fh.readinto(view) != frame_bytes:
                raise VolumeError("pixel data is truncated")
            _store(out[k], buffer, bits_allocated, bits_stored, signed)


def _store(target: np.ndarray, buffer: np.ndarray, bits_allocated: int, bits_stored: int,
           signed: bool) -> None:
    """Copy stored values into float32, dropping bits above BitsStored (sign-extending)."""
    if 0 < bits_stored < bits_allocated:
        shift = bits_allocated - bits_stored
        if signed:
            np.left_shift(buffer, shift, out=buffer)
            np.right_shift(buffer, shift, out=buffer)
        else:
            np.bitwise_and(buffer, (1 << bits_stored) - 1, out=buffer)
    np.copyto(target, buffer, casting="unsafe")


def _fill_decoded(out: np.ndarray, obj: DicomObject, placed: Sequence[tuple[int, Frame]]) -> None:
    by_index = {frame.frame_index: k for k, frame in placed}
    indices = sorted(by_index)
    if obj.transfer_syntax not in (*_NATIVE, DeflatedExplicitVRLittleEndian):
        _check_declared_sizes(obj.ds, out.shape[1:])
    for index, array in zip(indices, iter_pixels(obj.ds, indices=indices), strict=True):
        if array.shape != out.shape[1:]:
            raise VolumeError(f"decoded frame has shape {array.shape}, expected {out.shape[1:]}")
        np.copyto(out[by_index[index]], array, casting="unsafe")


def _check_declared_sizes(ds: Dataset, shape: tuple[int, ...]) -> None:
    """Refuse compressed frames whose own header declares another size than Rows/Columns,
    before the decoder allocates what they declare."""
    count = integer(ds, "NumberOfFrames") or 1
    try:
        frames = list(generate_frames(ds.PixelData, number_of_frames=count))
    except Exception:  # not encapsulated as it should be: the decoder will say so
        return
    for frame in frames:
        declared = declared_size(frame)
        if declared is not None and declared != tuple(shape):
            raise VolumeError(
                f"a compressed frame declares {declared[0]} x {declared[1]} pixels where "
                f"Rows x Columns are {shape[0]} x {shape[1]}"
            )


def _rescale(target: np.ndarray, slope: float, intercept: float) -> None:
    if slope != 1.0:
        np.multiply(target, np.float32(slope), out=target)
    if intercept != 0.0:
        np.add(target, np.float32(intercept), out=target)


def _rescaled_range(bits_stored: int, signed: bool, slope: float, intercept: float
                    ) -> tuple[float, float]:
    if signed:
        low, high = -(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1
    else:
        low, high = 0, (1 << bits_stored) - 1
    a, b = low * slope + intercept, high * slope + intercept
    return (min(a, b), max(a, b))
