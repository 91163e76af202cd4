"""``radnode evaluate PREDICTION REFERENCE``: how well a segmentation agrees with a reference.

Both are label images: a DICOM SEG (read by node.results.read, on the SEG's own grid) or an image
file of any format the node reads (node.imaging.inputs). The metrics are node.measure.agreement's;
docs/evaluate.md defines them. Every failure is one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from node.commands.mapping import (
    LabelMap,
    MappingError,
    parse_label_list,
    parse_map_file,
    parse_map_specs,
)
from node.errors import NodeError
from node.imaging.errors import VolumeError
from node.imaging.inputs import KNOWN_FILES, image_format, is_dicom_file, load_image_file
from node.imaging.volume import Volume
from node.measure.agreement import (
    LabelAgreement,
    compare_labels,
    defined_counts,
    mean_agreement,
)
from node.measure.label_grid import AlignedLabels, align_labels

SEG_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation",
    "1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation",
}
LABEL_FILES = KNOWN_FILES.replace("DICOM, ", "DICOM SEG, ")

__all__ = ["EvaluateError", "Evaluation", "LabelImage", "evaluate_command", "evaluate_files",
           "format_table", "load_label_image"]


class EvaluateError(NodeError):
    """An input the command cannot evaluate; the message is the one line printed."""


@dataclass(frozen=True)
class LabelImage:
    """A label map and the names its file gives its values (a SEG's segment labels)."""

    volume: Volume
    names: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    prediction: str
    reference: str
    grid: AlignedLabels
    labels: list[LabelAgreement]
    notes: list[str]

    def to_dict(self) -> dict[str, object]:
        return {
            "prediction": self.prediction,
            "reference": self.reference,
            "grid": self.grid.to_dict(),
            "labels": [r.to_dict() for r in self.labels],
            "mean": mean_agreement(self.labels),
            "labels_in_mean": defined_counts(self.labels),
            "notes": self.notes,
        }


def evaluate_command(prediction: Path, reference: Path, maps: list[str] | None = None,
                     map_file: Path | None = None, labels: str | None = None,
                     as_json: bool = False) -> int:
    """What ``radnode evaluate`` does: 0 with the table (or JSON), 2 for a bad mapping, 1 for an
    input that cannot be evaluated."""
    try:
        mapping = parse_map_file(map_file) if map_file else parse_map_specs(maps) if maps else None
        only = parse_label_list(labels) if labels is not None else None
        if mapping is not None and only is not None:
            mapping = mapping.only(only)
        elif only is not None:
            mapping = LabelMap({label: (label,) for label in only})
    except MappingError as exc:
        print(f"radnode: {exc}", file=sys.stderr)
        return 2
    try:
        evaluation = evaluate_files(prediction, reference, mapping)
    except EvaluateError as exc:
        print(f"radnode: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(evaluation.to_dict(), indent=2))
    else:
        print(format_table(evaluation))
    return 0


def evaluate_files(prediction: Path, reference: Path, mapping: LabelMap | None = None
                   ) -> Evaluation:
    """Read both files, put the prediction on the reference grid and compare every label."""
    pred = load_label_image(prediction, "prediction")
    ref = load_label_image(reference, "reference")
    values = None if mapping is None else list(mapping.values)
    try:
        grid = align_labels(pred.volume, ref.volume, values)
    except VolumeError as exc:
        raise EvaluateError(exc.reason) from None
    names = {**_identity_names(ref.names, mapping), **pred.names}
    if mapping is not None:
        names.update(mapping.names)
    results = compare_labels(grid.prediction.array, grid.reference.array, grid.reference.spacing,
                             None if mapping is None else mapping.values, names)
    if not results:
        raise EvaluateError("nothing to compare: neither label map holds a non-zero value")
    return Evaluation(str(prediction), str(reference), grid, results, _notes(grid, results))


def load_label_image(path: Path, what: str) -> LabelImage:
    """A DICOM SEG or an image file as a label map, with the SEG's segment names."""
    if path.is_dir():
        raise EvaluateError(f"the {what} {path} is a folder: give one file ({LABEL_FILES})")
    if not path.is_file():
        raise EvaluateError(f"the {what} {path} does not exist")
    if image_format(path) is not None:
        try:
            return LabelImage(load_image_file(path, dtype=None))
        except VolumeError as exc:
            raise EvaluateError(f"cannot read the {what} {path}: {exc.reason}") from None
    if not is_dicom_file(path):
        raise EvaluateError(f"the {what} {path} is not a label image the node reads: expected "
                            f"{LABEL_FILES}")
    return _load_seg(path, what)


def _load_seg(path: Path, what: str) -> LabelImage:
    from pydicom import dcmread

    try:
        header = dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for a damaged file
        raise EvaluateError(f"cannot read the {what} {path}: {_first_line(exc)}") from None
    sop_class = str(header.get("SOPClassUID", ""))
    if sop_class not in SEG_SOP_CLASSES:
        kind = str(header.get("Modality", "")) or "DICOM"
        raise EvaluateError(f"the {what} {path} is a {kind} object, not a DICOM SEG")
    from node.results.read import read_segmentation

    try:
        seg = read_segmentation(path)
        volume = seg.label_volume()
    except Exception as exc:  # highdicom refuses irregular or damaged SEGs with many types
        raise EvaluateError(f"cannot read the {what} {path} as a label map: "
                            f"{_first_line(exc)}") from None
    return LabelImage(volume, {s.number: s.label for s in seg.segments})


def format_table(evaluation: Evaluation) -> str:
    """The table for people: one row per label, a mean row, then the notes."""
    results = evaluation.labels
    mapped = any(r.reference_values != (r.label,) for r in results)
    label_cells = [f"{r.label}={','.join(map(str, r.reference_values))}" if mapped
                   else str(r.label) for r in results]
    names = [r.name[:28] for r in results]
    lw = max(5, *(len(c) for c in label_cells))
    nw = max(8, *(len(n) for n in names))
    header = (f"{'label':<{lw}}  {'name':<{nw}}  {'Dice':>6}  {'IoU':>6}  {'precision':>9}  "
              f"{'recall':>6}  {'specificity':>11}  {'pred ml':>9}  {'ref ml':>9}  "
              f"{'vol diff %':>10}  {'HD95 mm':>8}")
    lines = [header, "-" * len(header)]
    for cell, name, r in zip(label_cells, names, results, strict=True):
        lines.append(
            f"{cell:<{lw}}  {name:<{nw}}  {_f(r.dice, 3):>6}  {_f(r.jaccard, 3):>6}  "
            f"{_f(r.precision, 3):>9}  {_f(r.recall, 3):>6}  {_f(r.specificity, 4):>11}  "
            f"{r.prediction_ml:>9.2f}  {r.reference_ml:>9.2f}  "
            f"{_f(r.volume_difference_percent, 1, signed=True):>10}  {_f(r.hd95_mm, 2):>8}")
    mean = mean_agreement(results)
    count = f"{len(results)} label{'s' if len(results) != 1 else ''}"
    lines.append("-" * len(header))
    lines.append(
        f"{'mean':<{lw}}  {count:<{nw}}  {_f(mean['dice'], 3):>6}  "
        f"{_f(mean['jaccard'], 3):>6}  {_f(mean['precision'], 3):>9}  {_f(mean['recall'], 3):>6}  "
        f"{_f(mean['specificity'], 4):>11}  {'':>9}  {'':>9}  "
        f"{_f(mean['volume_difference_percent'], 1, signed=True):>10}  "
        f"{_f(mean['hd95_mm'], 2):>8}")
    lines.extend(f"note: {note}" for note in evaluation.notes)
    return "\n".join(lines)


def _identity_names(names: dict[int, str], mapping: LabelMap | None) -> dict[int, str]:
    """The reference's names for prediction labels that stand for exactly that one value."""
    if mapping is None:
        return dict(names)
    return {label: names[refs[0]] for label, refs in mapping.values.items()
            if len(refs) == 1 and refs[0] in names}


def _notes(grid: AlignedLabels, results: list[LabelAgreement]) -> list[str]:
    notes = []
    if grid.resampled:
        notes.append("the prediction was on another grid: resampled onto the reference grid "
                     "(nearest neighbour)")
    if any(n for pair in grid.extended for n in pair):
        added = ", ".join(f"{axis} {before}+{after}" for axis, (before, after)
                          in zip("ijk", grid.extended, strict=True) if before or after)
        notes.append(f"labelled prediction voxels lie outside the reference grid: the grid was "
                     f"extended with background ({added} voxels)")
    for r in results:
        if r.prediction_ml == 0 and r.reference_ml == 0:
            notes.append(f"label {r.label}: absent from both (no Dice, IoU or HD95)")
        elif r.prediction_ml == 0:
            notes.append(f"label {r.label}: absent from the prediction (Dice 0, no HD95)")
        elif r.reference_ml == 0:
            notes.append(f"label {r.label}: absent from the reference (Dice 0, no HD95)")
    return notes


def _f(value: float | int | None, digits: int, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
