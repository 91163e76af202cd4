"""Brain-model benchmark: the node's ONNX networks against their PyTorch originals, whole jobs
against bare inference, peak memory of one job, and sliding-window inference.

Four parts, each in fresh subprocesses (so one part's memory and threads never touch another's):

1. **networks**: for each network, the exact tensor the node feeds its session, captured by
   running the node's own preprocessing (``run_model`` with ``LoadedModel.run`` wrapped: the
   wrapper copies the feeds and, for the network under test, stops before running it). That
   tensor goes through the node's session (``SessionRegistry``, ``RuntimeConfig(providers=...,
   intra_op_threads=--threads)``) and through the PyTorch original (deepbet's TorchScript files
   loaded with ``deepbet.utils.load_model``; brainchop's MeshNets built by
   ``models/meshnet_build.py`` from the TF.js weights in ``$RADNODE_SHARED_MODELS/brainchop``)
   with ``torch.set_num_threads(--threads)`` under ``torch.inference_mode()``. One untimed
   warm-up call each, then --runs calls each, alternating (ORT first on even rounds, PyTorch
   first on odd ones); the medians are compared. The outputs are checked to agree (max absolute
   difference, argmax agreement), so both sides ran the same network on the same input.
   Goal: the node at least 1.3x faster (torch median / ORT median >= 1.3). Where it is not, one
   run under ONNX Runtime's profiler gives the kernel time by operator type, and a graph ending
   in a Softmax is timed again with that Softmax written as plain operators (a what-if).
2. **job**: ``run_pipeline`` from files to SEG + SR written (``results=ResultSettings(...)``, as
   the worker does) on chris_t1 written as a 3D T1 MR DICOM series, for ``brain_structures_t1``
   (which runs ``brain_extraction_t1`` first) and for ``brain_extraction_t1`` alone. Sessions
   are created before the runs (the service creates them once); the first run is *cold*, the
   median of the others *warm*. Compared with the sum of part 1's bare ORT medians for the
   networks of that job. Goal: whole job <= 1.5x bare inference. The stage timings are printed,
   with the model run before (``after``) broken out: ``PipelineResult.timings`` does not
   include it.
3. **memory**: one job per fresh process, peak RSS (``ru_maxrss`` of that process, which is its
   VmHWM: interpreter, libraries, sessions and the job): brain_structures_t1 on the T1 DICOM
   series and on norm.mgz, brain_extraction_mr on FLAIR.nii.gz. Goal: <= 2.5 GB (10^9 bytes).
   Each job's first run is traced: the peak RSS between checkpoints (session calls, the
   pipeline's stages, the node's decode and clean-up functions; VmHWM reset at each), printed
   in full where the goal is missed. The whole-head T1 job is run once more with the other
   ``runtime.cpu_memory_arena`` setting, for comparison.
4. **sliding**: a copy of brain_structures_t1 in a temporary folder whose stage runs by sliding
   window (each --sliding PATCH:OVERLAP), on norm.mgz; label agreement with the whole-volume run
   of part 3 (on the voxels either run labels, and on all 256^3), time and peak memory.
   Goal: agreement >= 99.5 %. The default settings include 176:0.5, one patch that holds the
   whole crop (126x134x174, padded to 176^3 with its minimum): a control that separates the
   effect of padding from that of cutting the volume into patches.

    python bench/models.py [--runs 3] [--quick] [--only bbox,brain,structures-norm,...]
                           [--provider CPUExecutionProvider|CUDAExecutionProvider] [--threads 2]

On a shared machine, run the parts one at a time when the CPU is quiet, each with
``--workdir DIR --json DIR/PART.json --reuse <the earlier json files>``; a last invocation with
every ``--reuse`` file prints the whole report without running anything again.

``--only`` takes names from: bbox, brain, structures-norm, structures-t1, mindgrab-flair (the
networks), job, memory, sliding. ``--quick``: one run of everything, no warm-up, first sliding
setting only (a smoke test; its timings mean little).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline import reset_peak  # noqa: E402  (bench/pipeline.py, beside this script)

CPU = "CPUExecutionProvider"
GB = 1e9
MIB = 2**20
GOAL_SPEEDUP = 1.3
GOAL_JOB_RATIO = 1.5
GOAL_PEAK_BYTES = 2.5e9
GOAL_AGREEMENT = 0.995
RAW: list[dict[str, Any]] = []  # every child's result, for --json


def data_dir() -> Path:
    return Path(os.environ.get("RADNODE_TEST_DATA", REPO.parent / "shared" / "data"))


def shared_models() -> Path:
    return Path(os.environ.get("RADNODE_SHARED_MODELS", REPO.parent / "shared" / "models"))


T1 = "mr_brain_niivue/chris_t1.nii.gz"
NORM = "mr_brain_freesurfer_niivue/norm.mgz"
FLAIR = "mr_brain_niivue/FLAIR.nii.gz"

# network name -> (input file, package run to capture the feed, stage file, torch original)
NETWORKS: dict[str, tuple[str, str, str, str]] = {
    "bbox": (T1, "brain_extraction_t1", "bbox.onnx", "deepbet:bbox_model.pt"),
    "brain": (T1, "brain_extraction_t1", "brain.onnx", "deepbet:model.pt"),
    "structures-norm": (NORM, "brain_structures_t1", "model.onnx", "meshnet:model30chan18cls"),
    "structures-t1": (T1, "brain_structures_t1", "model.onnx", "meshnet:model30chan18cls"),
    "mindgrab-flair": (FLAIR, "brain_extraction_mr", "model.onnx", "meshnet:mindgrab"),
}
# the networks one job runs (for part 2's bare sum)
JOB_NETWORKS = {"brain_structures_t1": ("bbox", "brain", "structures-t1"),
                "brain_extraction_t1": ("bbox", "brain")}
SECTIONS = (*NETWORKS, "job", "memory", "sliding")


# --- helpers shared by the children -----------------------------------------------------------

def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def rss_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return peak_bytes()


def hwm_bytes() -> int:
    """VmHWM: the peak RSS since the process started or since the last reset_peak()."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return peak_bytes()


class PeakTrail:
    """Peak RSS between checkpoints: each ``mark`` charges the peak since the previous one to
    the segment between them, then starts a new peak; ``top`` is the peak of the whole trail."""

    def __init__(self) -> None:
        self.segments: list[tuple[str, str, int]] = []
        self.last = "start"
        self.top = hwm_bytes()
        self.resettable = reset_peak()

    def mark(self, name: str) -> None:
        peak = hwm_bytes()
        self.top = max(self.top, peak)
        self.segments.append((self.last, name, peak))
        self.last = name
        if self.resettable:
            reset_peak()


def traced_run(trail: PeakTrail) -> tuple[Any, Any]:
    """A LoadedModel.run that marks the trail before and after each session call, and the
    original, to put back."""
    from node.inference import runtime

    original = runtime.LoadedModel.run

    def run(self: Any, feeds: dict[str, Any]) -> list[Any]:
        what = f"{self.package.name}/{self.stage.name}"
        trail.mark(f"{what} session call")
        out = original(self, feeds)
        trail.mark(f"{what} session returned")
        return out

    return run, original


# functions whose calls mark the trail of a traced job (module, name as that module calls it)
TRACED = (("node.inference.stages", "model_grid"), ("node.inference.stages", "normalize"),
          ("node.inference.stages", "decode_segmentation"),
          ("node.inference.stages", "decode_mask"), ("node.inference.stages", "paste"),
          ("node.inference.run", "clean_labels"), ("node.inference.run", "clean_union"),
          ("node.inference.run", "report_values"), ("node.inference.run", "resample_like"),
          ("node.pipeline", "measure_totals"), ("node.pipeline", "write_outputs"),
          ("node.pipeline", "write_result_objects"))


def trace_functions(trail: PeakTrail) -> list[tuple[Any, str, Any]]:
    """Wrap the TRACED functions so that each call marks the trail on entry and return;
    returns what to put back."""
    import importlib

    saved = []
    for module_name, name in TRACED:
        module = importlib.import_module(module_name)
        fn = getattr(module, name)

        def wrapper(*a: Any, _fn: Any = fn, _name: str = name, **k: Any) -> Any:
            trail.mark(f"{_name} call")
            try:
                return _fn(*a, **k)
            finally:
                trail.mark(f"{_name} returned")

        setattr(module, name, wrapper)
        saved.append((module, name, fn))
    return saved


def registry_for(provider: str, threads: int, arena: str = "default") -> Any:
    """The node's SessionRegistry with these providers and threads; ``arena`` "on" or "off"
    sets ``runtime.cpu_memory_arena`` (ONNX Runtime's CPU memory arena), "default" leaves the
    node's default."""
    from node.config import RuntimeConfig
    from node.inference.runtime import SessionRegistry

    providers = [provider] if provider == CPU else [provider, CPU]
    extra = {} if arena == "default" else {"cpu_memory_arena": arena == "on"}
    return SessionRegistry(RuntimeConfig(providers=providers, intra_op_threads=threads, **extra))


def default_arena() -> bool:
    from node.config import RuntimeConfig

    return bool(RuntimeConfig().cpu_memory_arena)


def all_stages(package: Any) -> list[tuple[Any, Any]]:
    """(package, stage) for every stage of the package and of the model it runs after."""
    from node.inference.manifest import load_package

    out = []
    if package.manifest.after:
        out += all_stages(load_package(package.directory.parent / package.manifest.after))
    return out + [(package, stage) for stage in package.manifest.stages]


class _CapturedError(Exception):
    pass


def capture_feed(package: Any, volume: Any, registry: Any, stage_file: str
                 ) -> tuple[Any, dict[str, np.ndarray]]:
    """Run the node's ``run_model`` until it calls the session of ``stage_file`` (in
    ``package``); return that LoadedModel and a copy of its feeds. Earlier networks (the model
    run before, earlier stages) really run: the feed depends on them."""
    from node.inference import runtime
    from node.inference.run import run_model

    original = runtime.LoadedModel.run
    got: dict[str, Any] = {}

    def run(self: Any, feeds: dict[str, Any]) -> list[Any]:
        if self.package.name == package.name and self.stage.file == stage_file:
            got["loaded"] = self
            got["feeds"] = {k: np.array(v, copy=True) for k, v in feeds.items()}
            raise _CapturedError
        return original(self, feeds)

    runtime.LoadedModel.run = run  # type: ignore[method-assign]
    try:
        run_model(package, volume, registry)
    except _CapturedError:
        pass
    finally:
        runtime.LoadedModel.run = original  # type: ignore[method-assign]
    if "feeds" not in got:
        raise RuntimeError(f"{package.name} never ran {stage_file}")
    return got["loaded"], got["feeds"]


def torch_original(spec: str, device: str) -> Any:
    kind, name = spec.split(":", 1)
    if kind == "deepbet":
        from deepbet.utils import DATA_PATH, load_model

        net = load_model(f"{DATA_PATH}/models/{name}", no_gpu=device == "cpu")
        return net.eval()
    sys.path.insert(0, str(REPO / "models"))
    import meshnet_build as mb

    net = mb.torch_meshnet(mb.load_tfjs_meshnet(shared_models() / "brainchop" / name))
    return net.to(device).eval()


# --- child: one network, ORT against PyTorch -------------------------------------------------

def child_net(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from node.imaging.inputs import load_input
    from node.inference.manifest import load_package

    rel, package_name, stage_file, original = NETWORKS[args.name]
    torch.set_num_threads(args.threads)
    device = "cuda" if args.provider == "CUDAExecutionProvider" and torch.cuda.is_available() \
        else "cpu"
    registry = registry_for(args.provider, args.threads)
    package = load_package(REPO / "models" / package_name)
    volume = load_input(data_dir() / rel)
    t = time.perf_counter()
    loaded, feeds = capture_feed(package, volume, registry, stage_file)
    capture_s = time.perf_counter() - t
    del volume
    (name, x), = feeds.items()
    net = torch_original(original, device)
    x_t = torch.from_numpy(x).to(device)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def run_ort() -> tuple[float, np.ndarray]:
        t0 = time.perf_counter()
        (y,) = loaded.run({name: x})
        return time.perf_counter() - t0, y

    def run_torch() -> tuple[float, np.ndarray]:
        with torch.inference_mode():
            sync()
            t0 = time.perf_counter()
            y = net(x_t)
            sync()
            s = time.perf_counter() - t0
        return s, y.cpu().numpy()

    first: dict[str, float] = {}
    check: dict[str, Any] = {}
    if args.warmup:
        first["ort"], y_ort = run_ort()
        first["torch"], y_torch = run_torch()
        check = agreement(y_ort, y_torch)
        del y_ort, y_torch
    times: dict[str, list[float]] = {"ort": [], "torch": []}
    kept: dict[str, np.ndarray] = {}  # without a warm-up: the first round's outputs
    for n in range(args.runs):
        order = (("ort", run_ort), ("torch", run_torch))
        for key, fn in order if n % 2 == 0 else order[::-1]:
            s, y = fn()
            times[key].append(s)
            if not check:
                kept[key] = y
                if len(kept) == 2:
                    check = agreement(kept["ort"], kept["torch"])
                    kept.clear()
            del y
            gc.collect()
    profile = variant = None
    ratio = med(times["torch"]) / med(times["ort"])
    if ratio < GOAL_SPEEDUP and args.provider == CPU:
        del x_t, net
        gc.collect()
        profile = ort_profile(loaded, args.threads, {name: x})
        variant = softmax_variant(loaded, args.threads, {name: x}, args.runs)
    return {"name": args.name, "package": package_name, "stage_file": stage_file,
            "original": original, "shape": list(x.shape), "provider": loaded.provider,
            "torch_device": device, "capture_s": capture_s, "first": first, "times": times,
            "check": check, "torch_version": torch.__version__, "peak": peak_bytes(),
            "profile": profile, "variant": variant}


def _options(threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()  # as SessionRegistry makes them
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    return options


def softmax_variant(loaded: Any, threads: int, feeds: dict[str, np.ndarray], runs: int
                    ) -> dict[str, Any] | None:
    """What-if for a graph that ends in a Softmax over the channel axis (deepbet's): the same
    graph with that Softmax written as ReduceMax, Sub, Exp, ReduceSum, Div, timed alternately
    with the node's session. None when the graph has no Softmax."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load(str(loaded.package.stage_path(loaded.stage)))
    graph = model.graph
    nodes = [n for n in graph.node if n.op_type == "Softmax"]
    if not nodes:
        return None
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    for k, node in enumerate(nodes):
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        x, y, p = node.input[0], node.output[0], f"bench_softmax{k}_"
        at = list(graph.node).index(node)
        graph.node.remove(node)
        graph.initializer.append(helper.make_tensor(p + "axes", onnx.TensorProto.INT64, [1],
                                                    [axis]))
        reduce_max = helper.make_node("ReduceMax", [x, p + "axes"], [p + "max"], keepdims=1) \
            if opset >= 18 else helper.make_node("ReduceMax", [x], [p + "max"], keepdims=1,
                                                 axes=[axis])
        for n, new in enumerate([
            reduce_max,
            helper.make_node("Sub", [x, p + "max"], [p + "sub"]),
            helper.make_node("Exp", [p + "sub"], [p + "exp"]),
            helper.make_node("ReduceSum", [p + "exp", p + "axes"], [p + "sum"], keepdims=1),
            helper.make_node("Div", [p + "exp", p + "sum"], [y]),
        ]):
            graph.node.insert(at + n, new)
    session = ort.InferenceSession(model.SerializeToString(), _options(threads),
                                   providers=[CPU])
    out = loaded.stage.output.name
    diff = float(np.abs(session.run([out], feeds)[0] - loaded.run(feeds)[0]).max())
    times: dict[str, list[float]] = {"node": [], "variant": []}
    for n in range(max(runs, 1)):
        pair = (("node", lambda: loaded.run(feeds)), ("variant", lambda: session.run([out], feeds)))
        for key, fn in pair if n % 2 == 0 else pair[::-1]:
            t = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t)
    return {"softmax_nodes": len(nodes), "max_abs_diff": diff, "times": times}


def ort_profile(loaded: Any, threads: int, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """One run of the same graph with ONNX Runtime's profiler (the node's session options):
    kernel time by operator type, to show where a slow network spends it."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="radnode-bench-prof-") as tmp:
        options = _options(threads)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(loaded.package.stage_path(loaded.stage)), options,
                                       providers=[CPU])
        t = time.perf_counter()
        session.run([loaded.stage.output.name], feeds)
        wall = time.perf_counter() - t
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = {}
    count: dict[str, int] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + e["dur"] / 1e6
            count[op] = count.get(op, 0) + 1
    total = sum(by_op.values())
    top = sorted(by_op.items(), key=lambda kv: -kv[1])
    return {"wall": wall, "kernel_s": total,
            "ops": [(op, s, count[op]) for op, s in top]}


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return {"max_abs_diff": float(np.abs(a - b).max()), "max_abs": float(np.abs(b).max()),
            "argmax_agreement": float((a[0].argmax(0) == b[0].argmax(0)).mean())}


# --- child: whole jobs --------------------------------------------------------------------

def sliding_copy(tmp: Path, patch: int, overlap: float) -> Path:
    """brain_structures_t1 copied into ``tmp`` with its stage run by sliding window; the model
    it runs after is linked beside it."""
    src = REPO / "models" / "brain_structures_t1"
    dst = tmp / "brain_structures_t1"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("reference", "*.py"))
    (tmp / "brain_extraction_t1").symlink_to(REPO / "models" / "brain_extraction_t1")
    text = (dst / "model.toml").read_text()
    old = '[stages.run]\nmode = "whole"\n'
    if old not in text:
        raise RuntimeError('brain_structures_t1/model.toml: no [stages.run] mode = "whole"')
    new = (f'[stages.run]\nmode = "sliding_window"\npatch_size = [{patch}, {patch}, {patch}]\n'
           f'overlap = {overlap}\n')
    (dst / "model.toml").write_text(text.replace(old, new))
    return dst


def child_job(args: argparse.Namespace) -> dict[str, Any]:
    from node.config import OutputConfig, ResultsConfig
    from node.imaging.inputs import load_input
    from node.inference.manifest import load_package
    from node.pipeline import run_pipeline
    from node.results.objects import ResultSettings

    with tempfile.TemporaryDirectory(prefix="radnode-bench-models-") as tmp:
        if args.setting:
            patch, overlap = args.setting.split(":")
            folder = sliding_copy(Path(tmp), int(patch), float(overlap))
        else:
            folder = REPO / "models" / args.model
        package = load_package(folder)
        registry = registry_for(args.provider, args.threads, args.arena)
        t = time.perf_counter()
        providers = {f"{p.name}/{s.name}": registry.get(p, s).provider
                     for p, s in all_stages(package)}
        session_s = time.perf_counter() - t
        source = Path(args.input)
        settings = ResultSettings(ResultsConfig(), OutputConfig(), REPO / "sr_templates",
                                  dt.datetime.now(dt.UTC).replace(microsecond=0))
        from node.inference import runtime

        gc.collect()
        baseline = rss_bytes()
        runs = []
        for n in range(args.runs):
            # the first run (one job in a fresh process) is traced: peak RSS between checkpoints
            trail = PeakTrail() if n == 0 else None
            progress = None
            if trail is not None:
                def progress(stage: str, message: str, trail: PeakTrail = trail) -> None:
                    trail.mark(f"{stage}: {message.split(' (')[0][:48]}")

                runtime.LoadedModel.run, original = traced_run(trail)  # type: ignore[method-assign]
                saved = trace_functions(trail) if args.trace else []
            t = time.perf_counter()
            try:
                if source.is_dir():  # a DICOM series: files to SEG + SR, as the worker runs it
                    inputs: Any = sorted(p for p in source.iterdir() if p.is_file())
                    result = run_pipeline(inputs, package, Path(tmp) / f"out{n}",
                                          registry=registry, results=settings, progress=progress)
                else:  # an image file: loaded here (what `radnode run FILE` does), no SEG/SR
                    volume = load_input(source)
                    load_s = time.perf_counter() - t
                    if trail is not None:
                        trail.mark(f"{source.name} loaded")
                    result = run_pipeline(volume, package, Path(tmp) / f"out{n}",
                                          registry=registry, results=settings, progress=progress)
                    result.timings["load"] = load_s
                    del volume
            finally:
                if trail is not None:
                    runtime.LoadedModel.run = original  # type: ignore[method-assign]
                    for module, name, fn in saved:
                        setattr(module, name, fn)
            wall = time.perf_counter() - t
            if trail is not None:
                trail.mark("end of the job")
            after = result.output.after
            runs.append({
                "wall": wall, "timings": dict(result.timings),
                "after": None if after is None else {
                    "model": after.model, "preprocess": after.timings.preprocess,
                    "inference": after.timings.inference,
                    "postprocess": after.timings.postprocess},
                "files": sorted(result.files),
                "peak": trail.top if trail is not None else max(peak_bytes(), runs[0]["peak"]),
                "trail": trail.segments if trail is not None else None,
                "trail_resettable": trail.resettable if trail is not None else None,
            })
            if n == 0 and args.save_labels:
                np.save(args.save_labels, result.output.label_map)
            del result, after
            gc.collect()
    return {"model": package.name, "input": str(source), "sliding": args.setting,
            "arena": registry.settings.cpu_memory_arena,
            "providers": providers, "session_s": session_s, "baseline_rss": baseline,
            "runs": runs}


# --- parent ---------------------------------------------------------------------------------

def run_child(kind: str, args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    """Run one child, or take its result from --reuse (same kind, same arguments)."""
    cmd = [sys.executable, __file__, "--child", kind, "--runs", str(args.runs), "--threads",
           str(args.threads), "--provider", args.provider, *extra]
    if not args.warmup:
        cmd.append("--no-warmup")
    for old in args.reused:
        if old["kind"] == kind and old["cmd"][2:] == cmd[2:]:
            RAW.append(old)
            result = dict(old["result"])
            say(f"      (reused: measured {old['at']}, {old['load']} before it)")
            return result
    at, load = time.strftime("%Y-%m-%d %H:%M:%S"), load_avg()
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} {' '.join(extra)} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    out["child_s"] = time.perf_counter() - t
    out["load_after"] = load_avg()
    RAW.append({"kind": kind, "cmd": cmd, "at": at, "load": load,
                "end": time.strftime("%H:%M:%S"), "result": out})
    return out


def load_avg() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def machine() -> str:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        with open("/proc/meminfo") as fh:
            mem = f", {int(fh.readline().split()[1]) / 2**20:.0f} GiB RAM"
    except OSError:
        mem = ""
    return f"{os.cpu_count()} cores ({cpu}){mem}"


def med(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if len(values) > 1 else ""


def say(text: str = "") -> None:
    print(text, flush=True)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def part_networks(args: argparse.Namespace, names: list[str], table: list[tuple[str, ...]]
                  ) -> dict[str, float]:
    say("1. networks: the node's session (ONNX Runtime) against the PyTorch original, same "
        f"tensor, {args.threads} threads, alternating, median of {args.runs}")
    bare: dict[str, float] = {}
    for name in names:
        say(f"   {name}: running ({load_avg()}) ...")
        r = run_child("net", args, ["--name", name])
        ort, tch = med(r["times"]["ort"]), med(r["times"]["torch"])
        bare[name] = ort
        ratio = tch / ort
        c = r["check"]
        first = r["first"]
        table.append((f"{name}: torch / node ({'x'.join(map(str, r['shape'][2:]))})",
                      f"{ratio:.2f}x ({tch:.2f} / {ort:.2f} s)", f">= {GOAL_SPEEDUP}x",
                      verdict(ratio >= GOAL_SPEEDUP)))
        say(f"   {name:16s} {r['stage_file']} <- {r['original']}; input "
            f"{'x'.join(map(str, r['shape']))} from {NETWORKS[name][0]}")
        say(f"      node ORT ({r['provider']}) {ort:7.2f} s [{spread(r['times']['ort'])}]   "
            f"PyTorch {r['torch_version']} ({r['torch_device']}) {tch:7.2f} s "
            f"[{spread(r['times']['torch'])}]   torch/node = {ratio:.2f}x  "
            f"(goal >= {GOAL_SPEEDUP}x: {verdict(ratio >= GOAL_SPEEDUP)})")
        if first:
            say(f"      warm-up calls (not counted): ORT {first['ort']:.2f} s, "
                f"PyTorch {first['torch']:.2f} s")
        say(f"      outputs: max |ORT - torch| {c['max_abs_diff']:.2e} (max |y| "
            f"{c['max_abs']:.3g}), argmax agreement {c['argmax_agreement']:.6f}; "
            f"process peak {r['peak'] / MIB:.0f} MiB; child {r['child_s']:.0f} s, "
            f"{r.get('load_after', '')} after it")
        if r.get("profile"):
            p = r["profile"]
            ops = ", ".join(f"{op} {s:.2f} s ({s / p['kernel_s']:.0%}, {n}x)"
                            for op, s, n in p["ops"][:6])
            say(f"      ORT profile of one run ({p['wall']:.2f} s, kernels {p['kernel_s']:.2f} s):"
                f" {ops}")
        if r.get("variant"):
            v = r["variant"]
            node_s, var_s = med(v["times"]["node"]), med(v["times"]["variant"])
            say(f"      what-if, its Softmax as ReduceMax/Sub/Exp/ReduceSum/Div (max diff "
                f"{v['max_abs_diff']:.1e}): {var_s:.2f} s against the node's {node_s:.2f} s "
                f"(alternated, median of {len(v['times']['node'])}); torch / variant = "
                f"{tch / var_s:.2f}x")
            table.append((f"  what-if: {name} with Softmax decomposed", f"{tch / var_s:.2f}x "
                          f"({tch:.2f} / {var_s:.2f} s)", f">= {GOAL_SPEEDUP}x", "(not the node)"))
    say()
    return bare


def print_job(r: dict[str, Any], label: str) -> None:
    runs = r["runs"]
    warm = runs[1:] or runs[:1]
    keys = ("load", "preprocess", "inference", "postprocess", "measure", "write")
    say(f"   {label}: sessions created in {r['session_s']:.2f} s (before the runs); "
        f"{len(runs)} run(s): cold = first, warm = median of {len(warm)}")
    say(f"      {'stage':34s} {'cold s':>8s} {'warm s':>8s}")
    rows: list[tuple[str, Any]] = []
    if runs[0]["after"]:
        m = runs[0]["after"]["model"]
        for k in ("preprocess", "inference", "postprocess"):
            rows.append((f"{m} {k}", lambda run, k=k: run["after"][k]))
    for k in keys:
        rows.append((k if k != "write" else "write (labels, SEG, SR, json)",
                     lambda run, k=k: run["timings"].get(k, 0.0)))

    parts = list(rows)

    def accounted(run: dict[str, Any]) -> float:
        return sum(f(run) for _, f in parts)

    rows.append(("rest (not in the timings)", lambda run: run["wall"] - accounted(run)))
    rows.append(("whole job (wall)", lambda run: run["wall"]))
    for title, f in rows:
        say(f"      {title:34s} {f(runs[0]):8.2f} {med([f(x) for x in warm]):8.2f}")


def part_jobs(args: argparse.Namespace, series: Path, bare: dict[str, float],
              table: list[tuple[str, ...]]) -> dict[str, Any]:
    say(f"2. whole job (files -> SEG + SR written) against bare inference; chris_t1 as a "
        f"{len(list(series.iterdir()))}-slice MR DICOM series")
    jobs = {}
    for model, nets in JOB_NETWORKS.items():
        say(f"   {model}: running ({load_avg()}) ...")
        r = run_child("job", args, ["--model", model, "--input", str(series),
                                    "--runs", str(args.job_runs), "--trace"])
        jobs[model] = r
        print_job(r, model)
        runs = r["runs"]
        warm = runs[1:] or runs[:1]
        wall_w, wall_c = med([x["wall"] for x in warm]), runs[0]["wall"]
        missing = [n for n in nets if n not in bare]
        if missing:
            inf = med([x["timings"]["inference"] + (x["after"]["inference"] if x["after"] else 0)
                       for x in warm])
            base, how = inf, f"the job's own inference timings ({', '.join(missing)} not run)"
        else:
            base = sum(bare[n] for n in nets)
            how = " + ".join(f"{n} {bare[n]:.2f}" for n in nets)
        ratio = wall_w / base
        say(f"      bare inference {base:.2f} s ({how}); whole job warm {wall_w:.2f} s = "
            f"{ratio:.2f}x, cold {wall_c:.2f} s = {wall_c / base:.2f}x (goal <= "
            f"{GOAL_JOB_RATIO}x: {verdict(ratio <= GOAL_JOB_RATIO)}); files "
            f"{', '.join(runs[0]['files'])}")
        table.append((f"{model} job / bare inference (warm; cold)",
                      f"{ratio:.2f}x; {wall_c / base:.2f}x ({wall_w:.1f} / {base:.1f} s)",
                      f"<= {GOAL_JOB_RATIO}x", verdict(ratio <= GOAL_JOB_RATIO)))
    say()
    return jobs


def print_trail(run: dict[str, Any], full: bool) -> None:
    """Where the peak was reached: the peak RSS of each segment between checkpoints."""
    trail = run.get("trail")
    if not trail:
        return
    if not run.get("trail_resettable"):
        say("      (VmHWM cannot be reset here: segment peaks are cumulative)")
    top = max(trail, key=lambda seg: seg[2])
    if not full:
        say(f"      peak reached between '{top[0]}' and '{top[1]}'")
        return
    say("      peak RSS between checkpoints of the job (MiB):")
    for start, end, peak in trail:
        flag = "  <- peak" if (start, end, peak) == tuple(top) else ""
        say(f"        {peak / MIB:6.0f}  {start} -> {end}{flag}")


def part_memory(args: argparse.Namespace, series: Path, jobs: dict[str, Any], tmp: Path,
                table: list[tuple[str, ...]]) -> dict[str, Any]:
    say("3. peak memory of one brain job, each in a fresh process (ru_maxrss of that process)")
    cases = [("brain_structures_t1", series, "T1 DICOM series"),
             ("brain_structures_t1", data_dir() / NORM, "norm.mgz"),
             ("brain_extraction_mr", data_dir() / FLAIR, "FLAIR.nii.gz")]
    out = {}
    for model, source, label in cases:
        key = f"{model} on {label}"
        if model in jobs and source == series:
            r = jobs[model]  # the job child of part 2: its first run was one job in a fresh process
        else:
            say(f"   {key}: running ({load_avg()}) ...")
            extra = ["--model", model, "--input", str(source), "--runs", "1", "--trace"]
            if label == "norm.mgz":
                extra += ["--save-labels", str(tmp / "whole_norm.npy")]
            r = run_child("job", args, extra)
        out[key] = r
        first = r["runs"][0]
        say(f"   {key:44s} peak {first['peak'] / GB:5.2f} GB ({first['peak'] / MIB:.0f} MiB); "
            f"RSS before the job (libraries + sessions) {r['baseline_rss'] / MIB:.0f} MiB; "
            f"job {first['wall']:.1f} s")
        table.append((f"peak RSS: {key}", f"{first['peak'] / GB:.2f} GB", "<= 2.5 GB",
                      verdict(first["peak"] <= GOAL_PEAK_BYTES)))
        print_trail(first, full=first["peak"] > GOAL_PEAK_BYTES)
        if source == series and model == "brain_structures_t1" and args.provider == CPU:
            # the same job with the other arena setting, for comparison
            other = "off" if default_arena() else "on"
            say(f"   {key}, ONNX Runtime's CPU memory arena {other} "
                f"(runtime.cpu_memory_arena = {str(other == 'on').lower()}) ({load_avg()}) ...")
            w = run_child("job", args, ["--model", model, "--input", str(source), "--runs", "1",
                                        "--trace", "--arena", other])["runs"][0]
            say(f"      arena {other}: peak {w['peak'] / GB:.2f} GB ({w['peak'] / MIB:.0f} MiB), "
                f"job {w['wall']:.1f} s (default, arena {'on' if default_arena() else 'off'}: "
                f"{first['wall']:.1f} s; one cold job each)")
            print_trail(w, full=True)
            table.append((f"  same, arena {other} (comparison)", f"{w['peak'] / GB:.2f} GB",
                          "<= 2.5 GB", verdict(w["peak"] <= GOAL_PEAK_BYTES)))
    if "brain_extraction_t1" in jobs:
        first = jobs["brain_extraction_t1"]["runs"][0]
        say(f"   (brain_extraction_t1 alone on the T1 series: peak {first['peak'] / GB:.2f} GB)")
    say()
    return out


def part_sliding(args: argparse.Namespace, memory: dict[str, Any], tmp: Path,
                 table: list[tuple[str, ...]]) -> None:
    say("4. sliding window: brain_structures_t1 on norm.mgz, stage run by patches, against the "
        "whole-volume run")
    whole_file = tmp / "whole_norm.npy"
    key = "brain_structures_t1 on norm.mgz"
    if key not in memory:
        say(f"   whole-volume run ({load_avg()}) ...")
        memory[key] = run_child("job", args, ["--model", "brain_structures_t1", "--input",
                                              str(data_dir() / NORM), "--runs", "1", "--trace",
                                              "--save-labels", str(whole_file)])
    whole = np.load(whole_file)
    w = memory[key]["runs"][0]
    say(f"   whole volume: job {w['wall']:.1f} s (network {w['timings']['inference']:.1f} s), "
        f"peak {w['peak'] / GB:.2f} GB; {int((whole > 0).sum())} labelled voxels")
    for setting in args.sliding:
        say(f"   patch:overlap {setting}: running ({load_avg()}) ...")
        labels_file = tmp / f"sliding_{setting.replace(':', '_')}.npy"
        r = run_child("job", args, ["--model", "brain_structures_t1", "--input",
                                    str(data_dir() / NORM), "--runs", "1", "--trace",
                                    "--setting", setting, "--save-labels", str(labels_file)])
        got = np.load(labels_file)
        same = got == whole
        either = (got > 0) | (whole > 0)
        fg = float(same[either].mean())
        dice = []
        for v in np.union1d(np.unique(whole[whole > 0]), np.unique(got[got > 0])):
            a, b = whole == v, got == v
            dice.append((2 * float((a & b).sum()) / max(1, int(a.sum() + b.sum())), int(v)))
        worst = min(dice)
        s = r["runs"][0]
        say(f"   {setting:8s} job {s['wall']:6.1f} s (network {s['timings']['inference']:.1f} s),"
            f" peak {s['peak'] / GB:.2f} GB; agreement on labelled voxels {fg:.4%} "
            f"({int((~same).sum())} voxels differ), on all 256^3 {float(same.mean()):.4%}; "
            f"lowest Dice {worst[0]:.4f} (value {worst[1]})  (goal >= {GOAL_AGREEMENT:.1%}: "
            f"{verdict(fg >= GOAL_AGREEMENT)})")
        print_trail(s, full=True)
        table.append((f"sliding {setting}: agreement (labelled voxels)",
                      f"{fg:.2%}; {s['wall']:.0f} s; {s['peak'] / GB:.2f} GB",
                      f">= {GOAL_AGREEMENT:.1%}", verdict(fg >= GOAL_AGREEMENT)))
    say()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed calls of each network")
    parser.add_argument("--job-runs", type=int, default=3, help="runs of each whole job")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--provider", default=CPU,
                        help="ONNX Runtime provider for the node's sessions "
                             "(CPUExecutionProvider, CUDAExecutionProvider)")
    parser.add_argument("--only", default="", help=f"comma-separated: {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="one run each, no warm-up")
    parser.add_argument("--sliding", default="128:0.5,128:0.75,96:0.5,176:0.5",
                        help="sliding-window settings PATCH:OVERLAP, comma-separated (176: one "
                             "patch over norm.mgz's whole 126x134x174 crop, a control for the "
                             "padding alone)")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false")
    parser.add_argument("--json", type=Path, help="write every child's raw result to this file")
    parser.add_argument("--workdir", type=Path,
                        help="keep the DICOM series and label maps here (default: a temporary "
                             "folder); with --reuse, runs of separate invocations fit together")
    parser.add_argument("--reuse", type=lambda v: [p for p in v.split(",") if p], default=[],
                        help="--json files of earlier invocations: a child with the same "
                             "arguments is not run again, its result is taken from there")
    parser.add_argument("--child", choices=("net", "job"), help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--save-labels", help=argparse.SUPPRESS)
    parser.add_argument("--setting", help=argparse.SUPPRESS)  # a child's sliding window
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--arena", choices=("default", "on", "off"), default="default",
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child_net(args) if args.child == "net" else child_job(args)
        print("RESULT " + json.dumps(result))
        return 0
    if args.quick:
        args.runs, args.job_runs, args.warmup = 1, 1, False
    args.sliding = [s for s in args.sliding.split(",") if s]
    if args.quick:
        args.sliding = args.sliding[:1]
    only = [s for s in args.only.split(",") if s] or list(SECTIONS)
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}; choose from "
                     f"{', '.join(SECTIONS)}")

    import onnxruntime as ort

    say(f"bench/models {time.strftime('%Y-%m-%d %H:%M')}: {machine()}; python "
        f"{platform.python_version()}, onnxruntime {ort.__version__}; provider {args.provider}, "
        f"{args.threads} threads; ONNX Runtime CPU memory arena "
        f"{'on' if default_arena() else 'off'} (the node's default); {load_avg()}")
    if args.quick:
        say("QUICK: one run each, no warm-up: a smoke test, not a measurement")
    say()
    table: list[tuple[str, ...]] = []
    t_all = time.perf_counter()
    args.reused = []
    for name in args.reuse:
        args.reused += json.loads(Path(name).read_text())
    with tempfile.TemporaryDirectory(prefix="radnode-bench-models-") as tmp_name:
        tmp = args.workdir or Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        bare = part_networks(args, [n for n in NETWORKS if n in only], table)
        series = tmp / "t1"
        if {"job", "memory"} & set(only) and not (tmp / "t1.done").exists():
            from node.imaging.inputs import load_input
            from node.synthetic import write_volume_series

            shutil.rmtree(series, ignore_errors=True)
            write_volume_series(load_input(data_dir() / T1), series)
            (tmp / "t1.done").write_text("")
        jobs = part_jobs(args, series, bare, table) if "job" in only else {}
        memory = part_memory(args, series, jobs, tmp, table) if "memory" in only else {}
        if "sliding" in only:
            part_sliding(args, memory, tmp, table)
    if args.json:
        args.json.write_text(json.dumps(RAW, indent=1))
    gpu = args.provider != CPU
    if not gpu:
        say("5. GPU: the CUDA provider was not measured (no GPU on this machine); run "
            "`python bench/models.py --provider CUDAExecutionProvider` where there is one.")
        table.append(("CUDAExecutionProvider", "not measured (no GPU here)", "", ""))
    say()
    say(f"summary ({time.strftime('%H:%M')}, {(time.perf_counter() - t_all) / 60:.0f} min, "
        f"{load_avg()}):")
    w = max(len(r[0]) for r in table) if table else 10
    for row in table:
        say(f"  {row[0]:{w}s}  {row[1]:>34s}  {row[2]:>10s}  {row[3]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
