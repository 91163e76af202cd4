"""Every transfer syntax gives the same voxels: native (LE, implicit, BE) and compressed."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom import dcmwrite
from pydicom.uid import (
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from node.imaging import load_series
from node.synthetic import SeriesGeometry, ball, write_series

GEOMETRY = SeriesGeometry(rows=40, columns=36, slices=5, pixel_spacing=(1.0, 1.0),
                          slice_spacing=2.0, origin=(-18.0, -20.0, -4.0))
CONTENT = ball((0.0, 0.0, 0.0), 8.0, 300.0, background=-1000.0)


def _rewrite(path, syntax):
    ds = pydicom.dcmread(path)
    if syntax == ImplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(path, enforce_file_format=True)
    elif syntax == ExplicitVRBigEndian:
        ds.PixelData = ds.pixel_array.astype(">i2").tobytes()
        ds.file_meta.TransferSyntaxUID = syntax
        dcmwrite(path, ds, little_endian=False, implicit_vr=False, force_encoding=True)
    else:
        plugin = "pylibjpeg" if syntax == JPEG2000Lossless else ""
        ds.compress(syntax, encoding_plugin=plugin)
        ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian, RLELossless,
                                    JPEG2000Lossless])
def test_transfer_syntaxes_decode_to_the_same_volume(tmp_path, syntax):
    paths = write_series(tmp_path, GEOMETRY, CONTENT)
    expected = load_series(paths)
    assert float(expected.array.max()) == 300.0
    for path in paths:
        _rewrite(path, syntax)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == syntax
    volume = load_series(paths[::-1])
    np.testing.assert_array_equal(volume.array, expected.array)
    assert volume.origin == expected.origin
    assert volume.spacing == expected.spacing


@pytest.mark.parametrize("signed", [True, False])
def test_bits_above_bits_stored_are_ignored(tmp_path, signed):
    """12 of 16 bits hold the value; the top 4 are noise: masked, or sign-extended if signed."""
    geometry = SeriesGeometry(rows=32, columns=32, slices=2, pixel_spacing=(1.0, 1.0))
    paths = write_series(tmp_path, geometry, 0.0, rescale_intercept=0.0)
    values = np.tile(np.array([-2048, -1, 0, 2047] if signed else [0, 1, 2048, 4095]), 256)
    values = values.reshape(32, 32)
    noisy = (values.astype(np.int64) & 0x0FFF) | 0xA000
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, int(signed)
        ds.PixelData = noisy.astype(np.uint16).tobytes()
        ds.save_as(path, enforce_file_format=True)
    volume = load_series(paths)
    np.testing.assert_array_equal(volume.array[0], values)
    np.testing.assert_array_equal(volume.array[1], values)
