"""One DICOM series (a folder's files) into a :class:`Volume`.

Two passes: headers first (pixel data deferred), so a series that cannot form a volume is refused
before any pixel is decoded; then pixels, each frame straight into its slot of a preallocated
float32 array. Peak memory is the output plus one frame (one object for compressed multi-frame).

What is refused, with a :class:`VolumeError` reason: files that are not DICOM, several series or
SOP classes or frames of reference, images without pixel data, colour images, mixed sizes, mixed
orientations, mixed pixel spacing, duplicate positions, missing slices, uneven spacing and gantry
tilt. Non-image objects (SEG, SR, presentation states, ...) in the same folder are skipped;
localizers are skipped when other images remain. A 2D image without ImagePositionPatient (CR, DX,
MG, ...) becomes a one-slice volume at the origin with identity direction.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from node.imaging import pixels
from node.imaging.dicom_frames import DicomObject, Frame, frames_of, read_objects
from node.imaging.errors import VolumeError
from node.imaging.stack import stack_geometry
from node.imaging.volume import SliceSource, Volume

__all__ = ["VolumeError", "load_series"]


DEFAULT_MAX_VOXELS = 2**31  # 8 GiB of float32: beyond any CT a site sends, short of a bomb


def load_series(paths: Sequence[str | Path], *, max_voxels: int = DEFAULT_MAX_VOXELS) -> Volume:
    """The volume of one series' files (any order); raises VolumeError when it is not one.

    Voxels are float32 with RescaleSlope/Intercept applied (per frame), whatever the modality;
    MONOCHROME1 images are inverted so that higher values are brighter (see ``pixels``).
    ``sources[k]`` names the file, SOP Instance UID (the file meta's when the dataset's is blank)
    and frame number of slice ``k``. A series whose Rows x Columns x slices exceed
    ``max_voxels`` is refused before anything is allocated or decoded.
    """
    if not paths:
        raise VolumeError("no files given")
    objects = read_objects(list(paths))
    images = _image_objects(objects)
    _check_one_series(images)
    frames: list[Frame] = [frame for obj in images for frame in frames_of(obj)]
    voxels = sum(frame.rows * frame.columns for frame in frames)
    if voxels > max_voxels:
        first = frames[0]
        raise VolumeError(
            f"the series claims {len(frames)} x {first.rows} x {first.columns} = "
            f"{voxels:,} voxels, more than workers.max_voxels ({max_voxels:,})"
        )
    geometry = stack_geometry(frames)
    ordered = [frames[i] for i in geometry.order]

    out = np.empty((len(ordered), ordered[0].rows, ordered[0].columns), dtype=np.float32)
    by_object: dict[int, list[tuple[int, Frame]]] = defaultdict(list)
    for k, frame in enumerate(ordered):
        by_object[id(frame.obj)].append((k, frame))
    for placed in by_object.values():
        pixels.fill(out, placed[0][1].obj, placed)

    return Volume(
        array=out,
        spacing=geometry.spacing,
        origin=geometry.origin,
        direction=geometry.direction,
        modality=images[0].modality,
        sources=[
            SliceSource(f.obj.path, f.obj.sop_instance_uid, f.frame_number) for f in ordered
        ],
        frame_of_reference_uid=images[0].frame_of_reference_uid,
    )


def _image_objects(objects: list[DicomObject]) -> list[DicomObject]:
    """The objects that carry images; refuses when none do."""
    images = [obj for obj in objects if obj.is_image]
    if not images:
        kinds = Counter(obj.modality or "unknown" for obj in objects)
        listed = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        raise VolumeError(f"no image objects among {len(objects)} files ({listed})")
    localizers = [obj for obj in images if obj.is_localizer]
    if localizers and len(localizers) < len(images):
        images = [obj for obj in images if not obj.is_localizer]
    return images


def _check_one_series(images: list[DicomObject]) -> None:
    """One series, one SOP class, one frame of reference (blank SOP class or frame of reference
    values are not counted; blank series UIDs are, as one series, when others are present)."""
    for attribute, what in (
        ("series_uid", "series"),
        ("sop_class_uid", "SOP classes"),
        ("frame_of_reference_uid", "frames of reference"),
    ):
        values = {getattr(obj, attribute) for obj in images}
        if attribute != "series_uid" or len(values) == 1:
            values -= {""}  # blank series UIDs count as one more series beside others
        if len(values) > 1:
            raise VolumeError(
                f"{len(values)} {what} found where one is expected; give one series at a time"
            )
    seen = Counter(obj.sop_instance_uid for obj in images if obj.sop_instance_uid)
    repeated = sum(n - 1 for n in seen.values() if n > 1)
    if repeated:
        raise VolumeError(f"{repeated} files repeat a SOP Instance UID of another file")
