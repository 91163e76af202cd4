"""Pipeline benchmark: a 512x512x300 CT through a model package (models/lung_ct), stage by stage.

The series is written to a temporary folder (or taken from --data) and run through
``run_pipeline`` with its file paths, so loading is included. Each measurement runs in a fresh
subprocess: the pipeline child creates the session (timed apart: the service creates it once),
then runs the pipeline --runs times; its first run is reported as *cold* (first touch of the
process's memory) and the median of the others as *warm*. Peak memory is the process's VmHWM,
reset at every stage boundary (``/proc/self/clear_refs``), also given above the RSS the process
had before the run (interpreter, libraries, session). A second child runs a bare
``onnxruntime.InferenceSession.run`` on the same preprocessed tensor, with the provider that the
pipeline used, for the overhead and the throughput ratio bare / pipeline.

    python bench/pipeline.py [--slices 300] [--runs 5] [--data DIR] [--model models/lung_ct]
                             [--providers CUDAExecutionProvider,CPUExecutionProvider]

Goals: load <= 1 s; everything but the model <= 3 s; peak memory <= 4x the float32 volume; on an
NVIDIA GPU, throughput within 90 % of bare ONNX Runtime.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STAGES = ("load", "preprocess", "inference", "postprocess", "measure", "write")
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
MIB = 2**20


# --- memory of this process (Linux /proc; ru_maxrss elsewhere) -----------------------------

def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_bytes() -> int:
    kb = _status_kb("VmRSS")
    return kb * 1024 if kb is not None else peak_bytes()


def peak_bytes() -> int:
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    return kb * 1024


def reset_peak() -> bool:
    """Start a new peak at the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class StagePeaks:
    """A ``run_pipeline`` progress callback: the peak RSS since the previous callback is
    charged to the stage of this one (``inference`` covers preprocess, inference and
    postprocess: ``run_model`` reports once), then the peak starts again."""

    def __init__(self) -> None:
        self.peaks: dict[str, int] = {}
        self.resettable = reset_peak()

    def __call__(self, stage: str, message: str) -> None:
        peak = peak_bytes()
        self.peaks[stage] = max(self.peaks.get(stage, 0), peak)
        if self.resettable:
            reset_peak()


# --- children ------------------------------------------------------------------------------

def _paths(data: Path) -> list[Path]:
    return sorted(p for p in data.iterdir() if p.is_file())


def _registry(providers: list[str]) -> Any:
    from node.config import RuntimeConfig
    from node.inference.runtime import SessionRegistry

    return SessionRegistry(RuntimeConfig(providers=providers))


def child_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    from node.inference.manifest import load_package
    from node.pipeline import run_pipeline

    package = load_package(args.model)
    registry = _registry(args.providers)
    t = time.perf_counter()
    provider = registry.get(package).provider
    session_s = time.perf_counter() - t
    paths = _paths(args.data)
    runs = []
    with tempfile.TemporaryDirectory(prefix="radnode-bench-out-") as out:
        for n in range(args.runs):
            meter = StagePeaks()
            baseline = rss_bytes()
            t = time.perf_counter()
            result = run_pipeline(paths, package, Path(out) / str(n), registry=registry,
                                  progress=meter)
            wall = time.perf_counter() - t
            meter("end", "")
            label_map = result.output.label_map
            runs.append({
                "wall": wall,
                "timings": dict(result.timings),
                "baseline_rss": baseline,
                "peak_rss": max(meter.peaks.values()),
                "stage_peaks": meter.peaks,
                "peaks_per_stage": meter.resettable,
                "shape": list(label_map.shape) if label_map is not None else None,
            })
            del result, label_map  # as a worker would: nothing kept between series
            gc.collect()
    return {"provider": provider, "session_s": session_s, "runs": runs,
            "voxels": _voxels(paths, runs), "process_peak": peak_bytes()}


def _voxels(paths: list[Path], runs: list[dict[str, Any]]) -> int:
    shape = runs[0]["shape"]
    if shape is not None:
        return int(shape[0] * shape[1] * shape[2])
    return len(paths) * 512 * 512


def child_bare(args: argparse.Namespace) -> dict[str, Any]:
    """The same preprocessed tensor through a plain InferenceSession (default options)."""
    import onnxruntime as ort

    from node.imaging.series import load_series
    from node.inference.manifest import load_package
    from node.inference.preprocess import model_grid, normalize

    package = load_package(args.model)
    manifest = package.manifest
    if manifest.run.mode != "whole" or manifest.input.layout not in ("NCDHW", "NCHW"):
        raise SystemExit("the bare comparison supports whole-volume, channels-first models")
    provider = args.bare_provider
    volume = load_series(_paths(args.data))
    x = normalize(model_grid(manifest.input, volume).array, manifest.input)[None]
    del volume
    if provider in GPU_PROVIDERS and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels, as the node's runtime does
    session = ort.InferenceSession(str(package.onnx_path), providers=[provider])
    feeds = {manifest.input.name: x}
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        session.run([manifest.output.name], feeds)
        times.append(time.perf_counter() - t)
    return {"provider": session.get_providers()[0], "times": times,
            "tensor_shape": list(x.shape)}


def run_child(kind: str, args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind, "--data", str(args.data), "--model",
           str(args.model), "--runs", str(args.runs), "--providers", ",".join(args.providers),
           *extra]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"{kind} child gave no result:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1][len("RESULT "):])


# --- report --------------------------------------------------------------------------------

def _machine() -> str:
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            total = int(fh.readline().split()[1]) / 2**20
        mem = f", {total:.0f} GiB RAM"
    except OSError:
        pass
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.node()}: {os.cpu_count()} cores ({cpu}){mem}"


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def _goal(label: str, value: float, limit: float, fmt: Callable[[float], str],
          higher_is_better: bool = False, applies: bool = True) -> str:
    ok = value >= limit if higher_is_better else value <= limit
    verdict = ("met" if ok else "NOT met") if applies else "n/a here"
    sign = ">=" if higher_is_better else "<="
    return f"  {label:46s} {fmt(value):>10s} {sign} {fmt(limit):<8s} {verdict}"


def report(args: argparse.Namespace, pipe: dict[str, Any], bare: dict[str, Any],
           size_mb: float, load_before: str) -> None:
    runs = pipe["runs"]
    cold, warm = runs[0], runs[1:] or runs[:1]
    volume_bytes = pipe["voxels"] * 4

    def med(get: Callable[[dict[str, Any]], float]) -> float:
        return statistics.median(get(r) for r in warm)

    def non_model(r: dict[str, Any]) -> float:
        return r["wall"] - r["timings"]["inference"]

    print(f"pipeline: {args.slices_label} through {args.model.name} "
          f"({size_mb:.0f} MB of DICOM), {time.strftime('%Y-%m-%d')}")
    print(f"machine: {_machine()}; {load_before} before, {_load()} after")
    import onnxruntime as ort

    print(f"onnxruntime {ort.__version__}; pipeline provider {pipe['provider']} "
          f"(asked for {', '.join(args.providers)}); session created in "
          f"{pipe['session_s']:.2f} s (once per process, not in the runs)")
    print(f"runs: {len(runs)} in one process; cold = the first, warm = median of the other "
          f"{len(warm)}")
    print()
    print(f"  {'stage':28s} {'cold s':>8s} {'warm s':>8s} {'warm peak MiB':>14s}")
    peak_names = {"load": "load", "preprocess": "inference", "inference": "inference",
                  "postprocess": "inference", "measure": "measure", "write": "write"}
    for stage in STAGES:
        peak = med(lambda r, s=stage: r["stage_peaks"].get(peak_names[s], 0))
        shared = " (pre+inf+post)" if peak_names[stage] == "inference" else ""
        print(f"  {stage:28s} {cold['timings'][stage]:8.2f} "
              f"{med(lambda r, s=stage: r['timings'][s]):8.2f} {peak / MIB:14.0f}{shared}")
    print(f"  {'pipeline (wall)':28s} {cold['wall']:8.2f} {med(lambda r: r['wall']):8.2f}")
    print(f"  {'all but the model':28s} {non_model(cold):8.2f} {med(non_model):8.2f}")
    print()
    peak_all = max(r["peak_rss"] for r in runs)
    above = max(r["peak_rss"] - r["baseline_rss"] for r in runs)
    print(f"  float32 volume {volume_bytes / MIB:.0f} MiB; process peak RSS {peak_all / MIB:.0f} "
          f"MiB ({peak_all / volume_bytes:.2f}x); RSS before a run "
          f"{statistics.median(r['baseline_rss'] for r in runs) / MIB:.0f} MiB; "
          f"pipeline peak above it {above / MIB:.0f} MiB ({above / volume_bytes:.2f}x)")
    bare_s = statistics.median(bare["times"][1:] or bare["times"])
    pipe_s = med(lambda r: r["wall"])
    node_inference = med(lambda r: r["timings"]["inference"])
    print(f"  bare InferenceSession.run on {bare['provider']} (tensor "
          f"{'x'.join(map(str, bare['tensor_shape']))}): first {bare['times'][0]:.3f} s, "
          f"median {bare_s:.3f} s; node inference stage {node_inference:.3f} s")
    print(f"  overhead: pipeline - bare = {pipe_s - bare_s:.2f} s; throughput bare / pipeline = "
          f"{bare_s / pipe_s:.1%}")
    print()
    gpu = pipe["provider"] in GPU_PROVIDERS
    seconds = "{:.2f} s".format
    ratio = "{:.2f}x".format
    print("goals:")
    print(_goal("load (warm median)", med(lambda r: r["timings"]["load"]), 1.0, seconds))
    print(_goal("load (cold, first run)", cold["timings"]["load"], 1.0, seconds))
    print(_goal("all but the model (warm median)", med(non_model), 3.0, seconds))
    print(_goal("all but the model (cold, first run)", non_model(cold), 3.0, seconds))
    print(_goal("peak above the process baseline / volume", above / volume_bytes, 4.0, ratio))
    print(_goal("process peak RSS / volume (incl. libraries)", peak_all / volume_bytes, 4.0,
                ratio))
    print(_goal(f"throughput vs bare ORT (GPU goal; {pipe['provider']})", bare_s / pipe_s, 0.9,
                "{:.1%}".format, higher_is_better=True, applies=gpu))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--data", type=Path, help="a folder with one series (default: synthetic)")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "lung_ct")
    parser.add_argument("--providers", default="CUDAExecutionProvider,CPUExecutionProvider",
                        help="ONNX Runtime providers in order of preference (as in config.toml)")
    parser.add_argument("--child", choices=("pipeline", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--bare-provider", default="CPUExecutionProvider", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.providers = [p for p in args.providers.split(",") if p]
    if args.child:
        child = child_pipeline if args.child == "pipeline" else child_bare
        print("RESULT " + json.dumps(child(args)))
        return 0
    args.model = args.model.resolve()
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="radnode-bench-") as tmp:
        if args.data is None:
            from node.synthetic import SeriesGeometry, write_series

            args.data = Path(tmp) / "ct"
            write_series(args.data, SeriesGeometry(slices=args.slices))
            args.slices_label = f"synthetic 512x512x{args.slices} CT"
        else:
            args.data = args.data.resolve()
            args.slices_label = f"{len(_paths(args.data))} files from {args.data}"
        size_mb = sum(p.stat().st_size for p in _paths(args.data)) / 1e6
        pipe = run_child("pipeline", args, [])
        bare = run_child("bare", args, ["--bare-provider", pipe["provider"]])
    report(args, pipe, bare, size_mb, load_before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
