"""Small helpers for the imaging tests: edit written files, evaluate fields on a volume's grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from node.imaging.volume import Volume


def edit(path: Path, **attributes: object) -> None:
    """Rewrite one DICOM file with some attributes changed (None deletes)."""
    ds = pydicom.dcmread(path)
    for keyword, value in attributes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)


def copy_as_new_instance(source: Path, target: Path, **attributes: object) -> Path:
    """A copy of ``source`` with a fresh SOP Instance UID (and other changes)."""
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.save_as(target, enforce_file_format=True)
    return target


def field_on_grid(volume: Volume, field) -> np.ndarray:
    """``field`` evaluated at every voxel centre of ``volume``, shaped like its array [k, j, i]."""
    ni, nj, nk = volume.shape_ijk
    kk, jj, ii = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    xyz = volume.index_to_patient(np.stack([ii, jj, kk], axis=-1))
    return field(xyz[..., 0], xyz[..., 1], xyz[..., 2])


def linear_field(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Distinct values in every direction, so a swapped or flipped axis cannot pass."""
    return 2.0 * x + 5.0 * y + 11.0 * z


def rotation(degrees_x: float, degrees_y: float) -> np.ndarray:
    ax, ay = np.radians(degrees_x), np.radians(degrees_y)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    return ry @ rx


def position_of(path: str) -> np.ndarray:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return np.array([float(v) for v in ds.ImagePositionPatient])
