"""The one place geometry lives: a voxel array with its spacing, origin and direction in LPS.

Conventions follow SimpleITK and DICOM: ``array`` is indexed ``[k, j, i]`` (slice, row, column);
``spacing``, ``origin`` and index vectors are ``(i, j, k)`` ordered; ``direction`` is a 3x3
matrix whose *columns* are the patient-space (LPS, mm) unit vectors of the i, j and k axes. So

    patient = origin + direction @ (spacing * (i, j, k))

Every resampling goes through this class, so results map back to the source slices exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SliceSource:
    """Where slice ``k`` of a volume came from: a file, its SOP Instance UID, and a frame."""

    path: str
    sop_instance_uid: str
    frame_number: int | None = None  # 1-based, for enhanced multi-frame objects


@dataclass
class Volume:
    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    modality: str = ""
    sources: list[SliceSource] = field(default_factory=list)
    frame_of_reference_uid: str = ""

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"a volume is 3D (k, j, i); got shape {self.array.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.origin = tuple(float(o) for o in self.origin)  # type: ignore[assignment]
        self.direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if any(s <= 0 for s in self.spacing):
            raise ValueError(f"spacing must be positive; got {self.spacing}")

    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        k, j, i = self.array.shape
        return (i, j, k)

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix mapping (i, j, k, 1) to LPS (x, y, z, 1) in mm."""
        m = np.eye(4)
        m[:3, :3] = self.direction * np.asarray(self.spacing)[None, :]
        m[:3, 3] = self.origin
        return m

    def index_to_patient(self, ijk: np.ndarray) -> np.ndarray:
        """Continuous (..., 3) indices in (i, j, k) order to LPS millimetres."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ (self.direction * np.asarray(self.spacing)[None, :]).T + np.asarray(
            self.origin
        )

    def patient_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """LPS millimetres (..., 3) to continuous (i, j, k) indices."""
        xyz = np.asarray(xyz, dtype=np.float64) - np.asarray(self.origin)
        inv = np.linalg.inv(self.direction * np.asarray(self.spacing)[None, :])
        return xyz @ inv.T

    def with_array(self, array: np.ndarray) -> Volume:
        """The same grid holding other voxels (a mask, a probability map)."""
        if array.shape != self.array.shape:
            raise ValueError(f"shape {array.shape} does not match the grid {self.array.shape}")
        return Volume(
            array=array,
            spacing=self.spacing,
            origin=self.origin,
            direction=self.direction.copy(),
            modality=self.modality,
            sources=self.sources,
            frame_of_reference_uid=self.frame_of_reference_uid,
        )

    def crop(self, box: tuple[slice, slice, slice]) -> Volume:
        """The sub-volume of array slices ``box`` ([k, j, i], steps of 1), with its own origin."""
        starts = [b.indices(n)[0] for b, n in zip(box, self.array.shape, strict=True)]
        k0, j0, i0 = starts
        return Volume(
            array=self.array[box],
            spacing=self.spacing,
            origin=tuple(self.index_to_patient(np.array([i0, j0, k0], dtype=np.float64))),
            direction=self.direction.copy(),
            modality=self.modality,
            frame_of_reference_uid=self.frame_of_reference_uid,
        )

