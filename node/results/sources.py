"""The source images a SEG/SR derives from: headers only, checked once, in the volume's order.

highdicom needs no pixel data for SEG or SR (it reads geometry, identity and patient/study
attributes), so headers are read with ``stop_before_pixels``: about 1 ms per slice instead of
reading 0.5 MB of pixels each. Enhanced multi-frame sources are read once; the volume's slices
map to their frames (``SliceSource.frame_number``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

from node.imaging.volume import Volume
from node.results.errors import SourceError

# Type 1 in the source and needed by a SEG/SR: without these there is nothing to reference.
_REQUIRED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID",
             "FrameOfReferenceUID", "Rows", "Columns")
_REQUIRED_SINGLE_FRAME = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
_REQUIRED_MULTI_FRAME = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
# Type 2 patient/study attributes that SEG and SR copy: missing ones are written empty.
_TYPE2 = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
          "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")


@dataclass(frozen=True)
class SourceImages:
    """Source headers as highdicom wants them, and how the volume's slices map to them.

    ``frame_order`` is None for single-frame sources (dataset ``k`` is slice ``k``); for one
    multi-frame source it lists, per stored frame, the volume slice ``k`` it holds, so a
    [k, j, i] array becomes frame-ordered with ``array[frame_order]``.
    """

    datasets: tuple[Dataset, ...]
    frame_order: tuple[int, ...] | None = None

    @property
    def series_instance_uid(self) -> str:
        return str(self.datasets[0].SeriesInstanceUID)

    def in_frame_order(self, array: np.ndarray) -> np.ndarray:
        """A [k, j, i] array in the order of the source frames highdicom pairs it with."""
        return array if self.frame_order is None else array[list(self.frame_order)]


def read_sources(volume: Volume) -> SourceImages:
    """Headers of the files behind ``volume`` (one per slice, or one multi-frame object)."""
    if not volume.sources:
        raise SourceError("the volume has no source images (Volume.sources is empty)")
    if len(volume.sources) != volume.array.shape[0]:
        raise SourceError(f"{len(volume.sources)} sources for {volume.array.shape[0]} slices")
    paths = [s.path for s in volume.sources]
    if len(set(paths)) == len(paths):
        return prepare_sources([dcmread(p, stop_before_pixels=True) for p in paths])
    if len(set(paths)) != 1:
        raise SourceError("slices come from several multi-frame objects; a SEG needs one "
                          "single-frame image per slice or one multi-frame image")
    ds = dcmread(paths[0], stop_before_pixels=True)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    frames = [s.frame_number for s in volume.sources]
    if None in frames or sorted(frames) != list(range(1, n_frames + 1)):  # type: ignore[type-var]
        raise SourceError(f"the volume uses frames {frames} of a {n_frames}-frame object; "
                          "a SEG on it needs every frame exactly once")
    order = [0] * n_frames
    for k, f in enumerate(frames):
        order[f - 1] = k  # type: ignore[operator]
    return SourceImages(prepare_sources([ds]).datasets, tuple(order))


def prepare_sources(datasets: Sequence[Dataset]) -> SourceImages:
    """Check and complete source headers (in place): blank SOP UIDs come from the file meta,
    missing type 2 attributes are added empty; anything else missing raises SourceError."""
    if not datasets:
        raise SourceError("no source images")
    problems: list[str] = []
    for n, ds in enumerate(datasets):
        meta = getattr(ds, "file_meta", None)
        for keyword, meta_keyword in (("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
                                      ("SOPClassUID", "MediaStorageSOPClassUID")):
            if not ds.get(keyword) and meta is not None and meta.get(meta_keyword):
                setattr(ds, keyword, meta.get(meta_keyword))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        multi = frames > 1 or "PerFrameFunctionalGroupsSequence" in ds
        needed = _REQUIRED + (_REQUIRED_MULTI_FRAME if multi else _REQUIRED_SINGLE_FRAME)
        missing = [k for k in needed if ds.get(k) in (None, "")]
        if missing:
            problems.append(f"source {n + 1} ({ds.get('SOPInstanceUID') or 'no UID'}): "
                            f"missing or empty {', '.join(missing)}")
        for keyword in _TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, "")
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if
                                           len(problems) > 3 else "")
        raise SourceError(f"the source images cannot be referenced by a SEG/SR: {shown}")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        values = {str(ds.get(keyword)) for ds in datasets}
        if len(values) > 1:
            raise SourceError(f"the source images differ in {keyword}: {sorted(values)}")
    return SourceImages(tuple(datasets))
