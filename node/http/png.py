"""A minimal PNG encoder (8-bit RGB or grey), so previews need no imaging library."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def encode_png(pixels: np.ndarray, level: int = 6) -> bytes:
    """``pixels``: uint8 array (rows, columns) grey or (rows, columns, 3) RGB."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"PNG pixels must be uint8 (got {pixels.dtype})")
    if pixels.ndim == 2:
        colour_type, channels = 0, 1
    elif pixels.ndim == 3 and pixels.shape[2] == 3:
        colour_type, channels = 2, 3
    else:
        raise ValueError(f"PNG pixels are (rows, columns) or (rows, columns, 3): {pixels.shape}")
    rows, columns = pixels.shape[:2]
    raw = np.ascontiguousarray(pixels).reshape(rows, columns * channels)
    filtered = np.zeros((rows, columns * channels + 1), dtype=np.uint8)  # filter 0 per row
    filtered[:, 1:] = raw
    header = struct.pack(">IIBBBBB", columns, rows, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(filtered.tobytes(), level)) + _chunk(b"IEND", b""))


def decode_png(data: bytes) -> np.ndarray:
    """Decode what :func:`encode_png` writes (filter 0 only); for tests and checks."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if zlib.crc32(kind + body) & 0xFFFFFFFF != struct.unpack(
                ">I", data[pos + 8 + length:pos + 12 + length])[0]:
            raise ValueError(f"bad CRC in chunk {kind!r}")
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    columns, rows, depth, colour_type = struct.unpack(">IIBB", header[:10])
    channels = {0: 1, 2: 3}[colour_type]
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(rows, -1)
    if depth != 8 or np.any(raw[:, 0] != 0):
        raise ValueError("only 8-bit, filter-0 PNGs are decoded here")
    pixels = raw[:, 1:].reshape(rows, columns, channels)
    return pixels[:, :, 0] if channels == 1 else pixels
