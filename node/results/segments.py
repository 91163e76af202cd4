"""Which labels become which SEG segments, and their tracking UIDs: shared by SEG and SR.

Only labels with at least one voxel become segments, numbered 1..n in label order (a SEG's
segment numbers start at 1 and have no gaps). The tracking UID of a label is derived from the
SEG's SOP Instance UID, so the SEG segment and the SR group that measures it carry the same one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from node.inference.manifest import LabelSpec
from node.inference.output import ModelOutput
from node.results.errors import ResultsError
from node.uids import derive_uid


@dataclass(frozen=True)
class Segment:
    number: int  # SEG segment number, 1..n
    label: LabelSpec


def segment_plan(output: ModelOutput) -> tuple[Segment, ...]:
    """The segments a SEG of ``output`` holds (empty when the label map has no labels)."""
    if output.label_map is None:
        return ()
    present = present_labels(output.label_map)
    specs = {lab.value: lab for lab in output.labels}
    unknown = sorted(set(present) - set(specs))
    if unknown:
        raise ResultsError(f"label map values {unknown} are not labels of model {output.model}")
    return tuple(Segment(n + 1, specs[v]) for n, v in enumerate(present))


def present_labels(label_map: np.ndarray) -> list[int]:
    """Non-zero values in ``label_map``, ascending.

    Counted a few slices at a time: one bincount of a whole 512x512x300 map would allocate a
    630 MB index array, and np.unique sorts. Only the labelled voxels (a few % of a CT) are
    counted: bincount widens its input to int64, which on every voxel took 0.12 s, 0.02 s here.
    """
    if label_map.size == 0:
        return []
    size = int(label_map.max()) + 1
    counts = np.zeros(size, dtype=np.int64)
    flat = label_map.reshape(label_map.shape[0], -1)
    for start in range(0, flat.shape[0], 8):
        chunk = flat[start : start + 8].ravel()
        labelled = chunk[chunk != 0]
        if labelled.size:
            counts += np.bincount(labelled, minlength=size)
    return [int(v) for v in np.flatnonzero(counts) if v != 0]


def segment_tracking_uid(seg_sop_instance_uid: str, label_value: int, root: str = "2.25.") -> str:
    return derive_uid(seg_sop_instance_uid, "segment", str(label_value), root=root)


def tracking_id(label: LabelSpec) -> str:
    """Human-readable tracking identifier of a segment: the label's name (max 64 chars)."""
    return label.name[:64]


def to_segment_numbers(label_map: np.ndarray, plan: tuple[Segment, ...]) -> np.ndarray:
    """``label_map`` with label values replaced by segment numbers (a copy only when needed)."""
    if all(s.number == s.label.value for s in plan):
        return label_map
    lut = np.zeros(int(label_map.max()) + 1, dtype=np.uint16 if len(plan) > 255 else np.uint8)
    for s in plan:
        lut[s.label.value] = s.number
    return lut[label_map]
