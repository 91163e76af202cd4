"""FreeSurfer MGH/MGZ files as :class:`Volume`: SimpleITK has no reader for them, nibabel has.

nibabel's world is RAS and its arrays are indexed [i, j, k]; Volume is LPS with arrays [k, j, i].
So the affine's first two rows change sign (RAS -> LPS), the array is transposed, and spacing
and direction are the lengths and unit vectors of the affine's columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from node.imaging.errors import VolumeError
from node.imaging.volume import Volume

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

__all__ = ["load_mgh", "volume_from_ras"]


def load_mgh(path: str | Path, *, modality: str = "",
             dtype: np.dtype | type | None = np.float32) -> Volume:
    """A FreeSurfer .mgz/.mgh file as a Volume; voxels as ``dtype`` (None keeps the file's).

    A 4D file with one frame is read as 3D; with several it is refused, like the other formats.
    """
    import nibabel as nib  # only when an MGH file is read

    try:
        image = nib.MGHImage.from_filename(str(path))
        shape = tuple(int(n) for n in image.shape)
        if len(shape) == 4 and shape[3] != 1:
            raise VolumeError(f"the MGH file holds a 4D image ({shape[3]} frames); only 3D "
                              "images are read: extract one frame first")
        array = np.asarray(image.dataobj)  # reads (and decompresses) every voxel now
        affine = np.asarray(image.affine, dtype=np.float64)
        zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    except VolumeError:
        raise
    except Exception as exc:  # nibabel and gzip raise many types for a bad file
        raise VolumeError("the MGH file could not be read: truncated, or not a valid "
                          "FreeSurfer MGH/MGZ file") from exc
    if array.ndim == 4:
        array = array[..., 0]
    if array.ndim != 3:
        raise VolumeError(f"the MGH file holds a {array.ndim}D image, not a volume")
    volume = volume_from_ras(array, affine, spacing=(zooms[0], zooms[1], zooms[2]),
                             modality=modality)
    if dtype is not None and volume.array.dtype != dtype:
        volume.array = volume.array.astype(dtype)
    return volume


def volume_from_ras(array_ijk: np.ndarray, affine_ras: np.ndarray, *,
                    spacing: tuple[float, float, float] | None = None, modality: str = ""
                    ) -> Volume:
    """A Volume from an [i, j, k] array and its 4x4 (i, j, k) -> RAS affine (nibabel's).

    ``spacing``: the file's own voxel sizes (MGH's delta), which the float32 affine only
    approximates; by default the lengths of the affine's columns.
    """
    lps = _RAS_TO_LPS @ np.asarray(affine_ras, dtype=np.float64)
    columns = lps[:3, :3]
    lengths = np.linalg.norm(columns, axis=0)
    if np.any(lengths <= 0):
        raise VolumeError("the image's affine has a zero-length axis")
    array = np.transpose(array_ijk, (2, 1, 0))
    return Volume(
        # MGH stores big-endian voxels; SimpleITK and numpy's fast paths want native ones.
        array=np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("=")),
        spacing=tuple(lengths) if spacing is None else spacing,
        origin=tuple(lps[:3, 3]),
        direction=columns / lengths[None, :],
        modality=modality,
    )
