"""The one pipeline: a series (or NIfTI) through one model to measurements and result files.

``radnode run`` and the service's workers both call :func:`run_pipeline`; there is no other
path from images to results. Each stage is timed (load, preprocess, inference, postprocess,
measure, write) and reported through an optional progress callback. Between steps a
:func:`node.jobcontrol.checkpoint` ends a job that its worker stopped (every ONNX run inside the
model step is stoppable too).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from node.imaging.series import DEFAULT_MAX_VOXELS, load_series
from node.imaging.sitk_io import to_sitk
from node.imaging.volume import Volume
from node.inference.manifest import ModelPackage, Total
from node.inference.output import ModelOutput
from node.inference.preprocess import DEFAULT_MAX_GRID_VOXELS, check_grids
from node.inference.run import run_model
from node.inference.runtime import SessionRegistry
from node.jobcontrol import checkpoint
from node.measure import (
    ClassProbability,
    Lesion,
    RegionMeasurements,
    class_probabilities,
    declared_requests,
    find_lesions,
    measure_labels,
    measure_region,
    parse_requests,
)
from node.results.kinds import result_kinds
from node.results.objects import ResultSettings, write_result_objects

Progress = Callable[[str, str], None]  # (stage, message)

STAGES = ("load", "preprocess", "inference", "postprocess", "measure", "write")


@dataclass
class PipelineResult:
    model: str
    version: str
    provider: str
    output: ModelOutput
    regions: dict[int, RegionMeasurements]
    lesions: list[Lesion]
    classes: tuple[ClassProbability, ...]
    timings: dict[str, float] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    totals: dict[str, RegionMeasurements] = field(default_factory=dict)

    def dicom_files(self) -> list[Path]:
        """The files that are DICOM result objects to send: one per registered output kind
        (node.results.kinds) that the run wrote, in the kinds' order."""
        return [self.files[kind] for kind in result_kinds() if kind in self.files]

    def summary(self) -> dict[str, Any]:
        """What a job records and ``radnode run`` prints: JSON-ready, no voxels."""
        labels = {lab.value: lab.name for lab in self.output.labels}
        return {
            "model": self.model,
            "version": self.version,
            "provider": self.provider,
            "regions": {labels.get(v, str(v)): m.to_dict() for v, m in self.regions.items()},
            "totals": {name: m.to_dict() for name, m in self.totals.items()},
            "lesions": [lesion.to_dict() for lesion in self.lesions],
            "classes": [c.to_dict() for c in self.classes],
            "flags": [{**f.to_dict(), "label_name": labels.get(f.label, str(f.label))}
                      for f in self.output.flags],
            **self._slice_probabilities(),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "files": {k: str(v) for k, v in self.files.items()},
        }

    def _slice_probabilities(self) -> dict[str, Any]:
        """A slice-wise classifier's probability of each class on each slice, in slice order."""
        per_slice = self.output.slice_probabilities
        if per_slice is None:
            return {}
        return {"slice_probabilities": {
            lab.name: [round(float(p), 5) for p in per_slice[:, n]]
            for n, lab in enumerate(self.output.labels)}}


def run_pipeline(
    source: Sequence[str | Path] | Volume,
    package: ModelPackage,
    out_dir: str | Path,
    *,
    registry: SessionRegistry | None = None,
    progress: Progress | None = None,
    results: ResultSettings | None = None,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    max_grid_voxels: int = DEFAULT_MAX_GRID_VOXELS,
) -> PipelineResult:
    """Run ``package`` on a series (file paths) or a loaded volume; write results to ``out_dir``.

    With ``results`` and a DICOM source, the result objects are written too: every registered
    output kind the job wants (the SEG and TID 1500 SR today; node.results.kinds).
    Raises :class:`node.imaging.errors.VolumeError` when the series cannot make a trustworthy
    volume, and :class:`node.results.ResultsError` when its results cannot be DICOM objects;
    the reasons name the problem, never the patient.
    """
    say = progress or (lambda stage, message: None)
    timings: dict[str, float] = {}
    checkpoint()  # in a worker, a stopped job (time, memory, cancel, shutdown) ends here
    t = time.perf_counter()
    if isinstance(source, Volume):
        volume = source
    else:
        say("load", f"loading {len(source)} files")
        volume = load_series(source, max_voxels=max_voxels)
    check_grids(package, volume, max_grid_voxels)
    timings["load"] = time.perf_counter() - t
    say("load", f"volume {volume.shape_ijk} at {_mm(volume.spacing)} mm "
                f"({timings['load']:.2f} s)")

    checkpoint()
    say("inference", f"running {package.name} {package.version}")
    output = run_model(package, volume, registry)
    timings["preprocess"] = output.timings.preprocess
    timings["inference"] = output.timings.inference
    timings["postprocess"] = output.timings.postprocess
    say("inference", f"{package.name} ran on {output.provider} "
                     f"(inference {output.timings.inference:.2f} s)")

    checkpoint()
    t = time.perf_counter()
    totals = measure_totals(volume, output, package.manifest.totals)
    regions, lesions, classes = measure(volume, output, package.manifest.measurements,
                                        {name: m.volume_ml for name, m in totals.items()})
    timings["measure"] = time.perf_counter() - t
    say("measure", f"{len(regions)} regions, {len(lesions)} lesions ({timings['measure']:.2f} s)")

    result = PipelineResult(
        model=package.name, version=package.version, provider=output.provider, output=output,
        regions=regions, lesions=lesions, classes=classes, timings=timings, totals=totals,
    )
    checkpoint()
    t = time.perf_counter()
    result.files = write_outputs(result, volume, Path(out_dir))
    if results is not None and volume.sources:
        result.files.update(write_result_objects(
            volume, package.manifest, output, regions, lesions, classes, results, Path(out_dir),
            totals=totals))
    timings["write"] = time.perf_counter() - t
    _write_json(Path(out_dir) / "measurements.json", result.summary())
    say("write", f"wrote {', '.join(sorted(result.files))} to {out_dir} "
                 f"({timings['write']:.2f} s)")
    return result


def measure_totals(volume: Volume, output: ModelOutput, totals: Sequence[Total]
                   ) -> dict[str, RegionMeasurements]:
    """The volume of each of the manifest's ``[[totals]]``: a union of labels, or the labels of
    the model this one ran after."""
    out: dict[str, RegionMeasurements] = {}
    for total in totals:
        source = output.after.label_map if total.from_after and output.after else output.label_map
        if source is None:
            continue
        mask = source > 0 if total.from_after else np.isin(source, total.labels)
        out[total.name] = measure_region(volume, mask, ["volume"])
    return out


def measure(
    volume: Volume, output: ModelOutput, declared: Sequence[Mapping[str, Any]],
    references: Mapping[str, float] | None = None,
) -> tuple[dict[int, RegionMeasurements], list[Lesion], tuple[ClassProbability, ...]]:
    """The manifest's measurements of each labelled region, lesion or class; ``references``
    are the volumes (ml) that ``volume_percent`` measurements relate to."""
    if output.kind == "classification":
        names = [lab.name for lab in output.labels]
        probs = [output.class_probabilities.get(lab.value, 0.0) for lab in output.labels]
        return {}, [], class_probabilities(names, probs)
    if output.label_map is None:
        return {}, [], ()
    wanted = [lab.value for lab in output.labels
              if not declared or any("labels" not in m or lab.value in m["labels"]
                                     for m in declared)]
    requests = declared_requests(declared) or parse_requests(["volume"])
    if output.kind == "detection":
        mask = output.label_map > 0
        return {}, find_lesions(volume, mask, output.probability, requests), ()
    regions = measure_labels(volume, output.label_map, wanted, requests, references)
    for value, region in regions.items():
        if raised := output.flags_of(value):
            regions[value] = replace(region, flags=tuple(f.name for f in raised))
    return regions, [], ()


def write_outputs(result: PipelineResult, volume: Volume, out_dir: Path) -> dict[str, Path]:
    """Research-friendly files beside the DICOM results: the label map as NIfTI."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    label_map = result.output.label_map
    if label_map is not None:
        path = out_dir / "labels.nii.gz"
        image = to_sitk(volume.with_array(np.ascontiguousarray(label_map)))
        tmp = path.with_suffix(".tmp.nii.gz")
        sitk.WriteImage(image, str(tmp), useCompression=True)
        os.replace(tmp, path)
        files["labels"] = path
    return files


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _mm(values: Sequence[float]) -> str:
    return " x ".join(f"{v:.3g}" for v in values)
