"""The node's one entry for "a thing to analyse": a DICOM folder, one DICOM file, or an image
file (NIfTI, NRRD, MetaImage, FreeSurfer MGH/MGZ), chosen by the file name's suffix here only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from node.imaging.errors import VolumeError
from node.imaging.series import load_series
from node.imaging.volume import Volume

# Suffix -> format; the one dispatch for image files (load_input, radnode run and evaluate).
IMAGE_SUFFIXES: dict[str, str] = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
    ".mgz": "mgh",
    ".mgh": "mgh",
}
KNOWN_FILES = ("DICOM, NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) or "
               "FreeSurfer MGH (.mgz, .mgh)")

__all__ = ["IMAGE_SUFFIXES", "dicom_files", "image_format", "is_dicom_file", "load_image_file",
           "load_input", "unknown_file"]


def load_input(path: str | Path) -> Volume:
    """A folder of DICOM files (one series), one DICOM file, or an image file (see
    IMAGE_SUFFIXES). A folder with several series is refused with a reason naming how many were
    found; a file that is neither DICOM nor a known image format is refused naming what is read.
    """
    path = Path(path)
    if path.is_dir():
        files = dicom_files(path)
        if not files:
            raise VolumeError("the folder holds no DICOM files")
        return load_series(files)
    if not path.is_file():
        raise VolumeError("the input does not exist")
    if image_format(path) is not None:
        return load_image_file(path)
    if not is_dicom_file(path):
        raise unknown_file(path)
    return load_series([path])


def unknown_file(path: str | Path) -> VolumeError:
    """The refusal of a file that is neither DICOM (with its 'DICM' marker) nor a known image."""
    return VolumeError(f"{_suffix_text(Path(path))} is not a file the node reads: expected "
                       f"{KNOWN_FILES}")


def image_format(path: str | Path) -> str | None:
    """The image format a file name says ("nifti", "nrrd", "metaimage", "mgh"), or None."""
    name = Path(path).name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):  # ".nii.gz" before ".gz"
        if name.endswith(suffix):
            return IMAGE_SUFFIXES[suffix]
    return None


def load_image_file(path: str | Path, *, modality: str = "",
                    dtype: np.dtype | type | None = np.float32) -> Volume:
    """An image file as a Volume, read by the reader its suffix names; voxels as ``dtype``
    (None keeps the file's, e.g. for label maps). Raises VolumeError with a one-line reason for
    an unknown suffix or a file that is truncated or not what its name says."""
    kind = image_format(path)
    if kind is None:
        raise VolumeError(f"{_suffix_text(Path(path))} is not an image format the node reads: "
                          f"expected {KNOWN_FILES.removeprefix('DICOM, ')}")
    if kind == "mgh":
        from node.imaging.mgh import load_mgh  # nibabel only when needed

        return load_mgh(path, modality=modality, dtype=dtype)
    from node.imaging.sitk_io import load_sitk_file  # SimpleITK only when needed

    return load_sitk_file(path, kind, modality=modality, dtype=dtype)


def dicom_files(folder: Path) -> list[Path]:
    """DICOM files under ``folder`` (recursively): those with the 'DICM' marker, skipping hidden
    files and DICOMDIR."""
    found = []
    for candidate in sorted(folder.rglob("*")):
        if candidate.name.startswith(".") or candidate.name.upper() == "DICOMDIR":
            continue
        if candidate.is_file() and is_dicom_file(candidate):
            found.append(candidate)
    return found


def is_dicom_file(path: Path) -> bool:
    """The file has the DICOM preamble and 'DICM' marker (the only DICOM files the node reads)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _suffix_text(path: Path) -> str:
    """'a .xyz file' (the suffix only: file names may carry PHI)."""
    suffix = "".join(path.suffixes[-2:]) if path.suffix.lower() == ".gz" else path.suffix
    return f"a {suffix.lower()} file" if suffix else "a file without suffix"
