"""The node's one entry for "a thing to analyse": a DICOM folder, one DICOM file, or NIfTI."""

from __future__ import annotations

from pathlib import Path

from node.imaging.errors import VolumeError
from node.imaging.series import load_series
from node.imaging.volume import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")

__all__ = ["dicom_files", "load_input"]


def load_input(path: str | Path) -> Volume:
    """A folder of DICOM files (one series), one DICOM file, or a .nii/.nii.gz file.

    A folder with several series is refused with a reason naming how many were found.
    """
    path = Path(path)
    if path.is_dir():
        files = dicom_files(path)
        if not files:
            raise VolumeError("the folder holds no DICOM files")
        return load_series(files)
    if not path.is_file():
        raise VolumeError("the input does not exist")
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        from node.imaging.sitk_io import load_nifti  # SimpleITK only when needed

        return load_nifti(path)
    return load_series([path])


def dicom_files(folder: Path) -> list[Path]:
    """DICOM files under ``folder`` (recursively): those with the 'DICM' marker, skipping hidden
    files and DICOMDIR."""
    found = []
    for candidate in sorted(folder.rglob("*")):
        if candidate.name.startswith(".") or candidate.name.upper() == "DICOMDIR":
            continue
        if candidate.is_file() and _has_dicom_marker(candidate):
            found.append(candidate)
    return found


def _has_dicom_marker(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"
