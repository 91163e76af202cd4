"""ONNX Runtime sessions: created once per model, shared by every worker thread.

Providers come from configuration, in order of preference; CPU is always the last resort. A GPU
provider is only asked for when it can load (driver and CUDA libraries present), so a GPU-less
machine runs quietly instead of printing onnxruntime's library-load errors. Each model gets one
log line naming the provider that actually runs it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import onnxruntime as ort

from node import jobcontrol
from node.config import RuntimeConfig
from node.inference.manifest import ModelPackage, Stage

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class LoadedModel:
    """A ready session for one stage of a package, and the provider that runs it."""

    package: ModelPackage
    session: ort.InferenceSession
    provider: str
    stage: Stage

    def run(self, feeds: dict[str, Any], extra: tuple[str, ...] = ()) -> list[Any]:
        """The stage's output, then the ``extra`` outputs (a manifest's flag masks) in order;
        onnxruntime computes only the outputs asked for.

        Inside a worker's job the run gets that job's ``RunOptions``, so stopping the job (time
        limit, memory budget, cancel, shutdown) ends the run within milliseconds; the run then
        raises :class:`node.jobcontrol.JobStoppedError` with the job's reason."""
        with jobcontrol.run_options() as options:
            try:
                return self.session.run([self.stage.output.name, *extra], feeds, options)
            except Exception:
                control = jobcontrol.current_job_control()
                if control is not None and control.reason is not None:
                    raise jobcontrol.JobStoppedError(control.reason) from None
                raise


class SessionRegistry:
    """One session per model stage (by folder, name, version and file), created on first use."""

    def __init__(self, settings: RuntimeConfig | None = None) -> None:
        self.settings = settings or RuntimeConfig()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str, str, str], threading.Lock] = {}
        self._models: dict[tuple[str, str, str, str], LoadedModel] = {}
        _quiet_onnxruntime()

    def get(self, package: ModelPackage, stage: Stage | None = None) -> LoadedModel:
        """The session of ``stage`` (default: the package's last stage)."""
        stage = stage or package.manifest.stages[-1]
        key = (str(package.directory.resolve()), package.name, package.version, stage.file)
        with self._lock:
            if key in self._models:
                return self._models[key]
            lock = self._loading.setdefault(key, threading.Lock())
        with lock:  # one thread builds it; the others wait and reuse it
            with self._lock:
                if key in self._models:
                    return self._models[key]
            loaded = self._create(package, stage)
            with self._lock:
                self._models[key] = loaded
            return loaded

    def loaded(self, package: ModelPackage) -> LoadedModel | None:
        """The last stage's session once every stage's is created (never creates one; for
        status)."""
        folder = str(package.directory.resolve())
        with self._lock:
            found = [self._models.get((folder, package.name, package.version, stage.file))
                     for stage in package.manifest.stages]
        return found[-1] if all(found) else None

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
            self._loading.clear()

    def _create(self, package: ModelPackage, stage: Stage) -> LoadedModel:
        providers, reasons = choose_providers(self.settings)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        options.intra_op_num_threads = self.settings.intra_op_threads
        options.inter_op_num_threads = self.settings.inter_op_threads
        options.graph_optimization_level = _OPTIMIZATION[self.settings.graph_optimization]
        options.enable_cpu_mem_arena = self.settings.cpu_memory_arena
        path = package.stage_path(stage)
        try:
            session = ort.InferenceSession(
                str(path), options, providers=_with_options(providers, self.settings)
            )
        except Exception as exc:  # a GPU provider that failed late: retry on the CPU
            if providers == [CPU]:
                raise
            reasons.append(f"{providers[0]} failed: {str(exc).splitlines()[0][:200]}")
            session = ort.InferenceSession(str(path), options, providers=[CPU])
        provider = session.get_providers()[0]
        if provider != providers[0] and not reasons:
            reasons.append(f"{providers[0]} could not be created")
        note = f" ({'; '.join(reasons)})" if reasons else ""
        what = package.name if len(package.manifest.stages) == 1 else \
            f"{package.name} (stage {stage.name})"
        log.info("model %s %s runs on %s%s", what, package.version, provider, note)
        return LoadedModel(package, session, provider, stage)


def choose_providers(settings: RuntimeConfig) -> tuple[list[str], list[str]]:
    """The providers to request (usable ones, in preference order, CPU last) and why any
    preferred one was left out."""
    available = set(ort.get_available_providers())
    chosen: list[str] = []
    reasons: list[str] = []
    for name in settings.providers:
        if name == CPU or name in chosen:
            continue
        if name not in available:
            reasons.append(f"{name} is not in this onnxruntime build")
            continue
        problem = _gpu_problem(name)
        if problem:
            reasons.append(f"{name} unavailable: {problem}")
            continue
        chosen.append(name)
    chosen.append(CPU)
    return chosen, reasons


def _with_options(providers: list[str], settings: RuntimeConfig) -> list[Any]:
    out: list[Any] = []
    for name in providers:
        if name == CUDA:
            opts: dict[str, Any] = {"device_id": settings.cuda_device_id}
            if settings.gpu_mem_limit_gb > 0:
                opts["gpu_mem_limit"] = int(settings.gpu_mem_limit_gb * 2**30)
            out.append((name, opts))
        elif name == TENSORRT:
            opts = {"device_id": settings.cuda_device_id, "trt_fp16_enable": settings.tensorrt_fp16}
            if settings.tensorrt_cache_dir:
                opts["trt_engine_cache_enable"] = True
                opts["trt_engine_cache_path"] = settings.tensorrt_cache_dir
            out.append((name, opts))
        else:
            out.append(name)
    return out


@cache
def _gpu_problem(provider: str) -> str | None:
    """Why a GPU provider cannot run here (None when it can), found without onnxruntime's
    noisy attempt: the NVIDIA driver, a device, then the provider library and its CUDA libs."""
    if provider not in (CUDA, TENSORRT):
        return None
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver (libcuda.so.1 not found)"
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return "no CUDA device"
    if hasattr(ort, "preload_dlls"):
        try:  # CUDA/cuDNN from the nvidia-* wheels, when installed
            ort.preload_dlls()
        except Exception as exc:  # pragma: no cover - depends on the machine
            log.debug("onnxruntime.preload_dlls failed: %s", exc)
    lib = "cuda" if provider == CUDA else "tensorrt"
    path = Path(ort.__file__).parent / "capi" / f"libonnxruntime_providers_{lib}.so"
    if path.exists():
        try:
            ctypes.CDLL(str(path), mode=os.RTLD_LAZY | getattr(os, "RTLD_LOCAL", 0))
        except OSError as exc:
            return str(exc).split(": cannot open")[0] + " missing"
    return None


@cache
def _quiet_onnxruntime() -> None:
    """onnxruntime's own logger: errors only (its warnings go to stderr, not to our log)."""
    ort.set_default_logger_severity(3)


_default: SessionRegistry | None = None
_default_lock = threading.Lock()


def default_registry() -> SessionRegistry:
    """The process-wide registry (default settings) used when a caller passes none."""
    global _default
    with _default_lock:
        if _default is None:
            _default = SessionRegistry()
        return _default
