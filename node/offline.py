"""``radnode run``: the offline front door to the same pipeline the service runs."""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path

import pydicom

from node.config import Config
from node.imaging.errors import VolumeError
from node.imaging.inputs import (
    dicom_files,
    image_format,
    is_dicom_file,
    load_image_file,
    unknown_file,
)
from node.imaging.volume import Volume
from node.inference.check import check_model
from node.inference.manifest import load_package
from node.inference.runtime import SessionRegistry
from node.pipeline import STAGES, PipelineResult, run_pipeline
from node.results.errors import ResultsError
from node.results.objects import ResultSettings
from node.results.templates import template_check


def run_offline(config: Config, source: Path, model: str, out: Path, force: bool = False,
                modality: str = "") -> int:
    folder = config.path(config.workers.models_dir) / model
    if not (folder / "model.toml").is_file():
        print(f"radnode: no model {model!r} in {folder.parent}", file=sys.stderr)
        return 2
    problems = check_model(folder, template_check(config.path(config.results.sr_templates_dir)))
    if problems:
        for problem in problems:
            print(f"radnode: invalid model: {problem}", file=sys.stderr)
        return 2
    package = load_package(folder)
    accepted = package.manifest.accepts.modalities
    modality = modality or (accepted[0] if len(accepted) == 1 else "")
    try:
        inputs = _inputs(source, modality)
    except VolumeError as exc:
        print(f"radnode: cannot read {source}: {exc.reason}", file=sys.stderr)
        return 1
    if isinstance(inputs, list):
        header = pydicom.dcmread(inputs[0], stop_before_pixels=True)
        refusal = package.manifest.accepts.rejects(header, len(inputs))
        if refusal and not force:
            print(f"radnode: {model} does not accept this series: {refusal} "
                  "(--force runs it anyway)", file=sys.stderr)
            return 1
    display = ProgressDisplay()
    settings = ResultSettings(
        results=config.results, output=config.output,
        templates_dir=config.path(config.results.sr_templates_dir),
        content_datetime=dt.datetime.now(dt.UTC).replace(microsecond=0),
    )  # generation 1: the UIDs the service gives a series' first run
    try:
        result = run_pipeline(inputs, package, out, registry=SessionRegistry(config.runtime),
                              progress=display, results=settings,
                              max_voxels=config.workers.max_voxels,
                              max_grid_voxels=config.workers.max_grid_voxels)
    except VolumeError as exc:
        print(f"radnode: cannot make a volume: {exc.reason}", file=sys.stderr)
        return 1
    except ResultsError as exc:
        print(f"radnode: cannot write SEG/SR: {exc}", file=sys.stderr)
        return 1
    print(format_result(result))
    return 0


def _inputs(source: Path, modality: str) -> list[Path] | Volume:
    """DICOM files, or an image file's volume (NIfTI, NRRD, MetaImage, MGH: these carry no
    modality, the caller's is used)."""
    if source.is_dir():
        files = dicom_files(source)
        if not files:
            raise VolumeError("the folder holds no DICOM files")
        return files
    if not source.is_file():
        raise VolumeError("the input does not exist")
    if image_format(source) is not None:
        return load_image_file(source, modality=modality)
    if not is_dicom_file(source):
        raise unknown_file(source)
    return [source]


class ProgressDisplay:
    """One line per stage on stderr, with the elapsed time: fine for a terminal and a log."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self, stage: str, message: str) -> None:
        step = STAGES.index(stage) + 1 if stage in STAGES else 0
        elapsed = time.perf_counter() - self.start
        print(f"[{step}/{len(STAGES)} {elapsed:6.1f}s] {stage:<10} {message}", file=sys.stderr,
              flush=True)


def format_result(result: PipelineResult) -> str:
    lines = [f"{result.model} {result.version} on {result.provider}"]
    names = {lab.value: lab.name for lab in result.output.labels}
    for value, region in result.regions.items():
        parts = [f"{region.volume_ml:.1f} ml"]
        if region.mean is not None:
            parts.append(f"mean {region.mean:.1f} {region.intensity_unit}")
        for derived in region.derived:
            if derived.value is not None:
                parts.append(f"{derived.name} {derived.value:.2f} {derived.unit}")
        lines.append(f"  {names.get(value, value)}: " + ", ".join(parts))
    for i, lesion in enumerate(result.lesions, 1):
        lines.append(f"  lesion {i}: {lesion.to_dict()}")
    for c in result.classes:
        lines.append(f"  {c.to_dict()}")
    for kind, path in sorted(result.files.items()):
        lines.append(f"  {kind}: {path}")
    return "\n".join(lines)
