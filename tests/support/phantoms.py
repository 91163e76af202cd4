"""Analytic phantoms for the measurement tests: shapes of known size at known LPS positions."""

from __future__ import annotations

import numpy as np

from node.imaging.volume import Volume

ANISO_SPACING = (0.7, 0.9, 2.5)  # (i, j, k) mm
OBLIQUE_ORIGIN = (-120.5, 85.25, -310.0)


def rotation(axis: str, degrees: float) -> np.ndarray:
    """A right-handed rotation matrix about x, y or z."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


def oblique_direction() -> np.ndarray:
    """Direction cosines rotated about two axes (z by 30 deg, then x by 25 deg)."""
    return rotation("x", 25.0) @ rotation("z", 30.0)


def grid(
    shape_ijk: tuple[int, int, int],
    spacing: tuple[float, float, float] = ANISO_SPACING,
    origin: tuple[float, float, float] = OBLIQUE_ORIGIN,
    direction: np.ndarray | None = None,
    modality: str = "CT",
) -> Volume:
    """An all-zero int16 volume on the given grid (array [k, j, i])."""
    i, j, k = shape_ijk
    return Volume(
        array=np.zeros((k, j, i), dtype=np.int16),
        spacing=spacing,
        origin=origin,
        direction=oblique_direction() if direction is None else direction,
        modality=modality,
    )


def patient_coords(volume: Volume) -> np.ndarray:
    """(k, j, i, 3) LPS coordinates of every voxel centre."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in volume.array.shape), indexing="ij")
    return volume.index_to_patient(np.stack([i, j, k], axis=-1))


def ellipsoid(
    volume: Volume,
    centre_lps: np.ndarray,
    semi_axes_mm: tuple[float, float, float],
    axes: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean mask of voxel centres inside an ellipsoid (columns of ``axes`` are its axes)."""
    axes = np.eye(3) if axes is None else axes
    local = (patient_coords(volume) - np.asarray(centre_lps)) @ axes  # coordinates on each axis
    return ((local / np.asarray(semi_axes_mm)) ** 2).sum(axis=-1) <= 1.0


def sphere(volume: Volume, centre_lps: np.ndarray, radius_mm: float) -> np.ndarray:
    return ellipsoid(volume, centre_lps, (radius_mm, radius_mm, radius_mm))


def centre_of(volume: Volume, frac_ijk: tuple[float, float, float]) -> np.ndarray:
    """The LPS point at a fraction of the grid along each index axis (0.5 = middle)."""
    return volume.index_to_patient(np.asarray(frac_ijk) * (np.asarray(volume.shape_ijk) - 1))
