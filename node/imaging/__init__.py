"""Images in, volumes out: DICOM series, single images and image files (NIfTI, NRRD, MetaImage,
FreeSurfer MGH/MGZ) as :class:`Volume`."""

from node.imaging.errors import VolumeError
from node.imaging.inputs import load_image_file, load_input
from node.imaging.series import load_series
from node.imaging.volume import SliceSource, Volume

__all__ = ["SliceSource", "Volume", "VolumeError", "load_image_file", "load_input", "load_series"]
