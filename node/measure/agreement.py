"""How well a segmentation agrees with a reference, per label: overlap, volumes and HD95.

For one label, P is the set of prediction voxels with that label and R the set of reference voxels
with any of its reference values (several values are merged: ``{1: [2, 41]}``). On the common grid
(the reference's, see node.measure.label_grid) with TP = |P & R|, FP = |P - R|, FN = |R - P| and
TN the other voxels of the grid:

    Dice = 2 TP / (2 TP + FP + FN)     Jaccard (IoU) = TP / (TP + FP + FN)
    precision = TP / (TP + FP)         recall (sensitivity) = TP / (TP + FN)
    specificity = TN / (TN + FP)       volume difference = (|P| - |R|) / |R| * 100 %

A ratio whose denominator is 0 is undefined (None): precision with an empty prediction, recall and
the volume difference with an empty reference, Dice and IoU when both are empty. An empty
prediction or reference has Dice 0 and no HD95 (None: infinitely far). HD95 is defined in
node.measure.surface. Specificity depends on the grid's extent (TN counts background voxels), so
it is near 1 for small structures on a large grid.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from node.imaging.volume import Volume
from node.measure._sitk import label_boxes
from node.measure.label_grid import align_labels
from node.measure.surface import hd95

LabelMapping = Mapping[int, Sequence[int]]
Box = tuple[slice, slice, slice]
METRICS = ("dice", "jaccard", "precision", "recall", "specificity", "volume_difference_percent",
           "hd95_mm")

__all__ = ["METRICS", "LabelAgreement", "LabelMapping", "compare_labels", "defined_counts",
           "evaluate_labels", "label_agreement", "mean_agreement"]


@dataclass(frozen=True)
class LabelAgreement:
    """One label's agreement; ratios are 0..1, None where undefined (see the module)."""

    label: int  # the prediction's value
    reference_values: tuple[int, ...]
    name: str
    true_positives: int  # voxels
    false_positives: int
    false_negatives: int
    true_negatives: int
    prediction_ml: float
    reference_ml: float
    dice: float | None
    jaccard: float | None
    precision: float | None
    recall: float | None
    specificity: float | None
    volume_difference_percent: float | None
    hd95_mm: float | None

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["reference_values"] = list(self.reference_values)
        return out


def evaluate_labels(prediction: Volume, reference: Volume,
                    mapping: LabelMapping | None = None,
                    names: Mapping[int, str] | None = None) -> list[LabelAgreement]:
    """Agreement of every label of ``prediction`` with ``reference``.

    ``mapping`` says which reference values each prediction label stands for (``{1: [2, 41]}``);
    without it, equal values are compared, for every non-zero value present in either map. The
    prediction is resampled onto the reference grid (nearest neighbour) when the grids differ.
    """
    values = None if mapping is None else list(mapping)
    aligned = align_labels(prediction, reference, values)
    return compare_labels(aligned.prediction.array, aligned.reference.array,
                          aligned.reference.spacing, mapping, names)


def compare_labels(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float],
                   mapping: LabelMapping | None = None,
                   names: Mapping[int, str] | None = None) -> list[LabelAgreement]:
    """As evaluate_labels, for two integer label arrays already on one grid (spacing (i, j, k)).

    Each label is measured on the crop of its voxels' joint bounding box, so many small labels on
    a large grid cost little.
    """
    if prediction.shape != reference.shape:
        raise ValueError(f"label maps of shapes {prediction.shape} and {reference.shape}")
    pred_boxes, ref_boxes = label_boxes(prediction), label_boxes(reference)
    if mapping is None:
        labels = sorted((set(pred_boxes) | set(ref_boxes)) - {0})
        mapping = {label: (label,) for label in labels}
    names = names or {}
    out = []
    for label, ref_values in mapping.items():
        boxes = [pred_boxes.get(int(label))] + [ref_boxes.get(int(v)) for v in ref_values]
        box = _union([b for b in boxes if b is not None])
        if box is None:  # absent from both
            p = r = np.zeros((0, 0, 0), dtype=bool)
        else:
            p = prediction[box] == label
            r = np.isin(reference[box], list(ref_values))
        out.append(label_agreement(p, r, spacing, label=int(label),
                                   reference_values=tuple(int(v) for v in ref_values),
                                   name=names.get(int(label), ""), grid_voxels=prediction.size))
    return out


def label_agreement(p: np.ndarray, r: np.ndarray, spacing: Sequence[float], *, label: int,
                    reference_values: tuple[int, ...] = (), name: str = "",
                    grid_voxels: int | None = None) -> LabelAgreement:
    """The agreement of two boolean masks of one grid (or one crop of it holding every voxel of
    both: then ``grid_voxels`` is the whole grid's count, for TN and specificity)."""
    p, r = np.asarray(p, dtype=bool), np.asarray(r, dtype=bool)
    tp = int(np.count_nonzero(p & r))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(r)) - tp
    tn = (p.size if grid_voxels is None else grid_voxels) - tp - fp - fn
    ml = float(np.prod(spacing)) / 1000.0
    return LabelAgreement(
        label=label,
        reference_values=reference_values or (label,),
        name=name,
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        true_negatives=tn,
        prediction_ml=(tp + fp) * ml,
        reference_ml=(tp + fn) * ml,
        dice=_ratio(2 * tp, 2 * tp + fp + fn),
        jaccard=_ratio(tp, tp + fp + fn),
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        specificity=_ratio(tn, tn + fp),
        volume_difference_percent=(None if tp + fn == 0
                                   else ((tp + fp) - (tp + fn)) / (tp + fn) * 100.0),
        hd95_mm=hd95(p, r, spacing),
    )


def mean_agreement(results: Iterable[LabelAgreement]) -> dict[str, float | None]:
    """The mean of each metric (METRICS) over the labels where it is defined; None if it is
    defined for none."""
    results = list(results)
    out: dict[str, float | None] = {}
    for metric in METRICS:
        values = [v for r in results if (v := getattr(r, metric)) is not None]
        out[metric] = float(np.mean(values)) if values else None
    return out


def defined_counts(results: Iterable[LabelAgreement]) -> dict[str, int]:
    """Over how many labels each mean of mean_agreement is taken."""
    results = list(results)
    return {m: sum(getattr(r, m) is not None for r in results) for m in METRICS}


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _union(boxes: list[Box]) -> Box | None:
    if not boxes:
        return None
    return tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes))
                 for a in range(3))  # type: ignore[return-value]
