"""``radnode models check``: every manifest valid, and consistent with its ONNX graph."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from node.inference.manifest import LAYOUTS_2D, Manifest, ManifestError, Stage, load_manifest
from node.inference.runtime import _quiet_onnxruntime

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int16)": "int16",
    "tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64",
}

# What a layer above finds wrong in a manifest, one message each (the SR template's check:
# node.results.templates.template_check).
ReportCheck = Callable[[Manifest], list[str]]


@dataclass(frozen=True)
class Problem:
    model: str  # the folder name
    message: str

    def __str__(self) -> str:
        return f"{self.model}: {self.message}"


def check_models(models_dir: str | Path,
                 report_check: ReportCheck | None = None) -> list[Problem]:
    """Problems with every model folder under ``models_dir`` (an empty list: all good); with
    ``report_check``, each model's report (its SR template) is checked against its manifest
    too."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return [Problem(str(models_dir), "models folder does not exist")]
    problems: list[Problem] = []
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        if not (folder / "model.toml").is_file():
            if (folder / "model.onnx").is_file():
                problems.append(Problem(folder.name, "model.onnx without a model.toml"))
            continue
        problems.extend(check_model(folder, report_check))
    return problems


def check_model(folder: str | Path, report_check: ReportCheck | None = None) -> list[Problem]:
    folder = Path(folder)
    try:
        manifest = load_manifest(folder / "model.toml")
    except ManifestError as exc:
        return [Problem(folder.name, str(exc))]
    out: list[Problem] = []

    def problem(message: str) -> None:
        out.append(Problem(folder.name, message))

    if manifest.name != folder.name:
        problem(f"name {manifest.name!r} differs from the folder name {folder.name!r}")
    for message in _report_problems(manifest, report_check):
        problem(message)
    if manifest.after and not (folder.parent / manifest.after / "model.toml").is_file():
        problem(f"after: no model package {manifest.after!r} beside this one")
    _quiet_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    for stage in manifest.stages:
        where = "" if len(manifest.stages) == 1 else f"stage {stage.name}: "
        onnx_path = folder / stage.file
        if not onnx_path.is_file():
            problem(f"{where}{stage.file} is missing")
            continue
        try:
            session = ort.InferenceSession(str(onnx_path), options,
                                           providers=["CPUExecutionProvider"])
        except Exception as exc:
            problem(f"{where}{stage.file} cannot be loaded by onnxruntime: "
                    f"{str(exc).splitlines()[0][:300]}")
            continue
        for message in graph_problems(manifest, session.get_inputs(), session.get_outputs(),
                                      stage):
            problem(where + message)
    return out


def _report_problems(manifest: Manifest, report_check: ReportCheck | None) -> list[str]:
    """The declared measurements, and the SR template that reports them."""
    from node.measure import declared_requests

    try:
        declared_requests(manifest.measurements)
    except ValueError as exc:
        return [f"measurements: {exc}"]
    return report_check(manifest) if report_check is not None else []


def graph_problems(manifest: Manifest, inputs: list[ort.NodeArg], outputs: list[ort.NodeArg],
                   stage: Stage | None = None) -> list[str]:
    """What the ONNX inputs/outputs (onnxruntime NodeArg lists) of ``stage`` (default: the last)
    contradict in the manifest."""
    found: list[str] = []
    stage = stage or manifest.stages[-1]
    spec, out = stage.input, stage.output
    by_name = {i.name: i for i in inputs}
    if spec.name not in by_name:
        found.append(f"input.name {spec.name!r} is not a graph input (graph inputs: "
                     f"{', '.join(sorted(by_name))})")
    else:
        extra = sorted(set(by_name) - {spec.name})
        if extra:
            found.append(f"the graph has other inputs the node cannot feed: {', '.join(extra)}")
        found += _input_problems(stage, by_name[spec.name])
    outs = {o.name: o for o in outputs}
    if out.name not in outs:
        found.append(f"output.name {out.name!r} is not a graph output (graph outputs: "
                     f"{', '.join(sorted(outs))})")
    else:
        found += _output_problems(manifest, stage, outs[out.name])
    if stage is manifest.stages[-1]:
        found += _flag_problems(manifest, stage, outs)
    return found


def _flag_problems(manifest: Manifest, stage: Stage, outs: dict[str, ort.NodeArg]) -> list[str]:
    """Each ``[[flags]]`` output is a graph output shaped like a label map: one channel (or
    none) and the input's rank."""
    found = []
    rank = 4 if stage.input.layout in LAYOUTS_2D else 5
    for i, flag in enumerate(manifest.flags):
        arg = outs.get(flag.output)
        if arg is None:
            found.append(f"flags[{i}].output {flag.output!r} is not a graph output (graph "
                         f"outputs: {', '.join(sorted(outs))})")
            continue
        dims = _dims(arg)
        if len(dims) not in (rank, rank - 1):
            found.append(f"flags[{i}]: output {arg.name!r} is a per-voxel mask of rank {rank} "
                         f"or {rank - 1}; the graph's has rank {len(dims)} {arg.shape}")
        elif len(dims) == rank:
            channel_axis = -1 if stage.input.layout.endswith("C") else 1
            if dims[channel_axis] not in (None, 1):
                found.append(f"flags[{i}]: output {arg.name!r} must have one channel; the "
                             f"graph gives {dims[channel_axis]}")
    return found


def _dims(arg: ort.NodeArg) -> list[int | None]:
    return [d if isinstance(d, int) and d > 0 else None for d in arg.shape]


def _input_problems(stage: Stage, arg: ort.NodeArg) -> list[str]:
    spec, run = stage.input, stage.run
    found = []
    dtype = _ORT_TYPES.get(arg.type, arg.type)
    if dtype != spec.dtype:
        found.append(f"input {arg.name!r}: input.dtype is {spec.dtype} but the graph wants {dtype}")
    rank = 4 if spec.layout in LAYOUTS_2D else 5
    dims = _dims(arg)
    if len(dims) != rank:
        found.append(f"input {arg.name!r}: layout {spec.layout} means rank {rank}, "
                     f"the graph input has rank {len(dims)} {arg.shape}")
        return found
    channel_axis = -1 if spec.layout.endswith("C") else 1
    if dims[channel_axis] is not None and dims[channel_axis] != spec.channels:
        found.append(f"input {arg.name!r}: input.channels is {spec.channels} but the graph has "
                     f"{dims[channel_axis]} channels")
    spatial = dims[2:] if channel_axis == 1 else dims[1:-1]
    batch = run.batch_size if run.mode in ("slicewise", "sliding_window") else 1
    if dims[0] is not None and dims[0] != batch:
        found.append(f"input {arg.name!r}: the graph's batch size is fixed at {dims[0]} but "
                     f"run.batch_size is {batch}")
    wanted: tuple[int, ...] | None
    if run.mode == "sliding_window":
        wanted, key = run.patch_size, "run.patch_size"
    elif stage.crop is not None and stage.crop.resize is not None:
        wanted, key = stage.crop.resize, "crop.resize"
    elif spec.resize is not None:
        wanted, key = spec.resize, "input.resize"
    elif spec.conform is not None and stage.crop is None:
        wanted, key = tuple(reversed(spec.conform.size)), "input.conform.size"
    else:
        wanted, key = None, ""
    for axis, d in enumerate(spatial):
        if d is None:
            continue
        if wanted is None:
            found.append(f"input {arg.name!r}: spatial size is fixed ({arg.shape}); declare "
                         "input.resize, crop.resize or run.patch_size to match it")
            break
        if d != wanted[axis]:
            found.append(f"input {arg.name!r}: {key} is {list(wanted)} but the graph fixes "
                         f"{arg.shape}")
            break
    return found


def _output_problems(manifest: Manifest, stage: Stage, arg: ort.NodeArg) -> list[str]:
    spec, out = stage.input, stage.output
    found = []
    dtype = _ORT_TYPES.get(arg.type, arg.type)
    if dtype != out.dtype:
        found.append(
            f"output {arg.name!r}: output.dtype is {out.dtype} but the graph gives {dtype}"
        )
    dims = _dims(arg)
    in_rank = 4 if spec.layout in LAYOUTS_2D else 5
    if out.kind == "classification":
        ranks = {2}
    elif out.format == "boxes":
        ranks = {2, 3}
    elif out.activation == "labelmap":
        ranks = {in_rank, in_rank - 1}
    else:
        ranks = {in_rank}
    if len(dims) not in ranks:
        found.append(f"output {arg.name!r}: a {out.kind} output ({out.activation}) has rank "
                     f"{' or '.join(map(str, sorted(ranks)))}; the graph's has rank {len(dims)} "
                     f"{arg.shape}")
        return found
    if out.format == "boxes":
        if dims[-1] is not None and dims[-1] != 8:
            found.append(f"output {arg.name!r}: box rows need 8 columns, the graph has {dims[-1]}")
        return found
    if out.activation == "labelmap":
        return found
    channel_axis = 1 if out.kind == "classification" or not spec.layout.endswith("C") else -1
    channels = dims[channel_axis]
    if stage.mask is not None:
        top = stage.mask.channel
    else:
        top = max(lab.channel or 0 for lab in manifest.labels)
    if channels is not None and channels <= top:
        found.append(f"output {arg.name!r}: label channel {top} is declared but the graph "
                     f"gives {channels} channels")
    return found
