"""Sessions: created once and shared; providers from settings; quiet CPU fallback."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import onnxruntime as ort
import pytest
from support.onnx_models import header, label, package, two_class_logits

from node.config import ConfigError, RuntimeConfig, build_config
from node.inference.runtime import (
    CPU,
    CUDA,
    TENSORRT,
    SessionRegistry,
    _gpu_problem,
    choose_providers,
)

NO_GPU = _gpu_problem(CUDA) is not None


@pytest.fixture
def pkg(tmp_path):
    return package(tmp_path, "tiny", header("tiny") + label(1, "fg"), two_class_logits())


def test_session_is_created_once_and_reused_across_threads(pkg, caplog):
    registry = SessionRegistry()
    caplog.set_level(logging.INFO, logger="node.inference.runtime")
    got = []
    threads = [threading.Thread(target=lambda: got.append(registry.get(pkg))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(g is got[0] for g in got)
    assert registry.get(pkg) is got[0]
    assert registry.get(pkg).session is got[0].session
    lines = [r.getMessage() for r in caplog.records if "runs on" in r.getMessage()]
    assert len(lines) == 1, lines


@pytest.mark.skipif(not NO_GPU, reason="this machine has a usable GPU")
def test_gpu_less_machine_falls_back_to_cpu_quietly(pkg, caplog, capfd):
    settings = RuntimeConfig(providers=[TENSORRT, CUDA, CPU], cuda_device_id=0)
    caplog.set_level(logging.INFO, logger="node.inference.runtime")
    loaded = SessionRegistry(settings).get(pkg)
    assert loaded.provider == CPU == loaded.session.get_providers()[0]
    lines = [r.getMessage() for r in caplog.records if r.name == "node.inference.runtime"]
    assert len(lines) == 1
    assert lines[0].startswith("model tiny 0.1 runs on CPUExecutionProvider (")
    assert "CUDAExecutionProvider unavailable" in lines[0]
    err = capfd.readouterr().err
    assert "Failed to load library" not in err and "onnxruntime" not in err, err


@pytest.mark.skipif(NO_GPU, reason="no usable GPU here")
def test_gpu_machine_runs_on_the_gpu(pkg, caplog):  # pragma: no cover - GPU machines only
    caplog.set_level(logging.INFO, logger="node.inference.runtime")
    loaded = SessionRegistry(RuntimeConfig(providers=[CUDA, CPU])).get(pkg)
    assert loaded.provider == CUDA


def test_provider_order_and_cpu_always_last():
    providers, reasons = choose_providers(RuntimeConfig(providers=[CPU]))
    assert providers == [CPU] and reasons == []
    providers, _ = choose_providers(RuntimeConfig(providers=[CUDA]))
    assert providers[-1] == CPU
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("CPU-only onnxruntime build")
    if NO_GPU:
        assert providers == [CPU]


def test_cpu_only_setting_logs_no_reason(pkg, caplog):
    caplog.set_level(logging.INFO, logger="node.inference.runtime")
    SessionRegistry(RuntimeConfig(providers=[CPU], intra_op_threads=1)).get(pkg)
    (line,) = [r.getMessage() for r in caplog.records if "runs on" in r.getMessage()]
    assert line == "model tiny 0.1 runs on CPUExecutionProvider"


def test_settings_are_validated():
    with pytest.raises(ConfigError, match=r"runtime\.providers: 'GPU' is not one of"):
        build_config({"runtime": {"providers": ["GPU"]}}, Path("."))
    with pytest.raises(ConfigError, match=r"runtime\.graph_optimization: must be one of"):
        build_config({"runtime": {"graph_optimization": "max"}}, Path("."))
