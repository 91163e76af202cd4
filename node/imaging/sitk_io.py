"""SimpleITK images and files (NIfTI, NRRD, MetaImage) to and from :class:`Volume`.

Volume's conventions are SimpleITK's (array [k, j, i], spacing/origin (i, j, k), direction columns
in LPS), so the conversion is a copy of fields. SimpleITK turns NIfTI's RAS into LPS on reading
and back on writing; NRRD and MetaImage give their space (LPS or RAS) and SimpleITK converts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from node.imaging.errors import VolumeError
from node.imaging.volume import Volume

__all__ = ["IMAGE_IOS", "from_sitk", "load_nifti", "load_sitk_file", "to_sitk"]


def to_sitk(volume: Volume) -> sitk.Image:
    """A SimpleITK image on the volume's grid (the voxels are copied)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array))
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(tuple(float(v) for v in np.asarray(volume.direction).ravel()))
    return image


def from_sitk(image: sitk.Image, **meta: Any) -> Volume:
    """A Volume from a 2D or 3D scalar SimpleITK image; ``meta`` fills the other fields
    (modality, sources, frame_of_reference_uid)."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError("images with several components per voxel (colour, vectors) are not "
                          "supported")
    dimension = image.GetDimension()
    if dimension == 2:
        direction = np.eye(3)
        direction[:2, :2] = np.asarray(image.GetDirection()).reshape(2, 2)
        return Volume(
            array=sitk.GetArrayFromImage(image)[None],
            spacing=(*image.GetSpacing(), 1.0),
            origin=(*image.GetOrigin(), 0.0),
            direction=direction,
            **meta,
        )
    if dimension != 3:
        raise VolumeError(f"a {dimension}D image is not a volume")
    return Volume(
        array=sitk.GetArrayFromImage(image),
        spacing=image.GetSpacing(),
        origin=image.GetOrigin(),
        direction=np.asarray(image.GetDirection()).reshape(3, 3),
        **meta,
    )


# SimpleITK's reader for each format the node reads with it, and the name used in messages.
IMAGE_IOS: dict[str, tuple[str, str]] = {
    "nifti": ("NiftiImageIO", "NIfTI"),
    "nrrd": ("NrrdImageIO", "NRRD"),
    "metaimage": ("MetaImageIO", "MetaImage"),
}


def load_sitk_file(path: str | Path, image_format: str, *, modality: str = "",
                    dtype: np.dtype | type | None = np.float32) -> Volume:
    """A NIfTI, NRRD or MetaImage file (``image_format``: a key of IMAGE_IOS) as a Volume.

    The format's own reader is used, not one guessed from the content, so a file that is not what
    its name says is refused rather than read as something else. Voxels as ``dtype`` (None keeps
    the file's; float32 by default like the DICOM loader). A 4D image with one volume is read as
    3D; with several it is refused (which volume to analyse is the caller's choice, not ours).
    """
    io_name, name = IMAGE_IOS[image_format]
    if image_format == "nifti":  # ITK zero-fills a truncated NIfTI instead of failing
        from node.imaging.nifti_size import check_nifti_complete

        check_nifti_complete(path)
    elif image_format == "metaimage":  # ITK's MetaIO prints to stderr before failing
        from node.imaging.metaimage_check import check_metaimage_complete

        check_metaimage_complete(path)
    reader = sitk.ImageFileReader()
    reader.SetImageIO(io_name)
    reader.SetFileName(str(path))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise VolumeError(f"the {name} file could not be read: truncated, or not a valid {name} "
                          "file") from exc
    if image.GetDimension() == 4:
        volumes = image.GetSize()[3]
        if volumes != 1:
            raise VolumeError(f"the {name} file holds a 4D image ({volumes} volumes); only 3D "
                              "images are read: extract one volume first")
        image = image[:, :, :, 0]
    volume = from_sitk(image, modality=modality)
    if dtype is not None and volume.array.dtype != dtype:
        volume.array = volume.array.astype(dtype)
    return volume


def load_nifti(path: str | Path, *, modality: str = "",
               dtype: np.dtype | type | None = np.float32) -> Volume:
    """A NIfTI file (.nii, .nii.gz) as a Volume; voxels as ``dtype`` (None keeps the file's,
    float32 by default like the DICOM loader). Scaling (scl_slope/inter) is applied."""
    return load_sitk_file(path, "nifti", modality=modality, dtype=dtype)
