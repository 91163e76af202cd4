"""SimpleITK images and files (NIfTI, ...) to and from :class:`Volume`.

Volume's conventions are SimpleITK's (array [k, j, i], spacing/origin (i, j, k), direction columns
in LPS), so the conversion is a copy of fields. SimpleITK turns NIfTI's RAS into LPS on reading
and back on writing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from node.imaging.errors import VolumeError
from node.imaging.volume import Volume

__all__ = ["from_sitk", "load_nifti", "to_sitk"]


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


def load_nifti(path: str | Path, *, modality: str = "",
               dtype: np.dtype | type | None = np.float32) -> Volume:
    """A NIfTI file (.nii, .nii.gz) as a Volume; voxels as ``dtype`` (None keeps the file's,
    float32 by default like the DICOM loader). Scaling (scl_slope/inter) is applied."""
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise VolumeError("the NIfTI file could not be read") from exc
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    volume = from_sitk(image, modality=modality)
    if dtype is not None and volume.array.dtype != dtype:
        volume.array = volume.array.astype(dtype)
    return volume
