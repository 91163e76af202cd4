"""Images in, volumes out: DICOM series, single images and NIfTI files as :class:`Volume`."""

from node.imaging.errors import VolumeError
from node.imaging.inputs import load_input
from node.imaging.series import load_series
from node.imaging.volume import SliceSource, Volume

__all__ = ["SliceSource", "Volume", "VolumeError", "load_input", "load_series"]
