"""Every second of a job has a limit, and hitting it costs that job, never the node.

A model package written here runs a Loop of matrix products whose trip count comes from the
image: a series of 500 HU runs (practically) forever, one of -1000 HU at once. Real nodes
(``python -m node serve``) receive the series from DCMTK ``storescu`` and must: fail a job at its
time limit and run the next one; fail a job that takes the process over its memory budget;
cancel a running job over HTTP; and on SIGTERM exit within the stated time with the running job
queued again, not failed. The ONNX Runtime terminate flag itself is measured in-process.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pydicom
import pytest
from onnx import TensorProto, helper, numpy_helper
from support.node_process import NodeProcess
from support.onnx_models import header
from support.peers import status_mb, storescu

from node.inference.manifest import load_package
from node.inference.runtime import SessionRegistry
from node.jobcontrol import (
    CANCELLED,
    JobControl,
    JobMonitor,
    JobStoppedError,
    StopKind,
    checkpoint,
    run_options,
)
from node.service import SHUTDOWN_TIMEOUT_S
from node.store import InstanceRecord, JobStore, NewJob, RecoveredJobs, open_store
from node.synthetic import SeriesGeometry, write_series
from node.worker import Workers

MODEL = "slow_ct"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
SMALL = SeriesGeometry(rows=16, columns=16, slices=4)
SLOW_HU, FAST_HU = 500.0, -1000.0  # the window maps them to x = 1 (slow) and x = 0 (fast)
EMIT_SLICES = 16  # the memory model keeps 16 x 256 x 256 floats (4 MB) per iteration


def slow_graph(n: int = 256, emit: int = 0) -> onnx.ModelProto:
    """y = two-class logits of x (x > 0.5); beside it, a Loop of ``max(x) * 1e7`` iterations of
    four n x n matrix products, whose result is multiplied by 0 into y so it must be computed.
    With ``emit``, every iteration also keeps an (emit, n, n) scan output: memory grows by
    ``emit * n * n * 4`` bytes per iteration until the run ends."""
    w = numpy_helper.from_array((np.eye(n) * 0.5 + 0.5 / n).astype(np.float32), "w")
    body_nodes = [helper.make_node("MatMul", ["m_in", "w"], ["mm0"])]
    body_nodes += [helper.make_node("MatMul", [f"mm{i}", "w"], [f"mm{i + 1}"]) for i in range(3)]
    body_nodes += [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                   helper.make_node("Identity", ["mm3"], ["m_out"])]
    body_outputs = [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                    helper.make_tensor_value_info("m_out", TensorProto.FLOAT, [n, n])]
    body_init = []
    if emit:
        body_init.append(numpy_helper.from_array(np.array([emit, n, n], np.int64), "shape"))
        body_nodes.append(helper.make_node("Expand", ["m_out", "shape"], ["kept"]))
        body_outputs.append(helper.make_tensor_value_info("kept", TensorProto.FLOAT,
                                                          [emit, n, n]))
    body = helper.make_graph(
        body_nodes, "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("m_in", TensorProto.FLOAT, [n, n])],
        body_outputs, initializer=body_init)

    def const(name: str, value: Any, dtype: Any = np.float32) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(
            np.asarray(value, dtype=dtype), name))

    loop_outputs = ["m_final", "kept_all"] if emit else ["m_final"]
    nodes = [
        const("k", 1e7), const("t", 0.5), const("ten", 10.0), const("zero", 0.0),
        const("go", True, np.bool_), const("m0", np.ones((n, n))),
        helper.make_node("ReduceMax", ["x"], ["xmax"], keepdims=0),
        helper.make_node("Mul", ["xmax", "k"], ["tripf"]),
        helper.make_node("Cast", ["tripf"], ["trip"], to=TensorProto.INT64),
        helper.make_node("Loop", ["trip", "go", "m0"], loop_outputs, body=body),
        helper.make_node("ReduceSum", ["m_final"], ["s"], keepdims=0),
    ]
    if emit:  # the kept tensors feed y too (times 0), so the Loop must produce them
        nodes += [helper.make_node("ReduceSum", ["kept_all"], ["ks"], keepdims=0),
                  helper.make_node("Add", ["s", "ks"], ["total"])]
    nodes += [
        helper.make_node("Mul", ["total" if emit else "s", "zero"], ["s0"]),
        helper.make_node("Sub", ["x", "t"], ["d"]),
        helper.make_node("Mul", ["d", "ten"], ["fg0"]),
        helper.make_node("Add", ["fg0", "s0"], ["fg"]),
        helper.make_node("Mul", ["x", "zero"], ["bg"]),
        helper.make_node("Concat", ["bg", "fg"], ["y"], axis=1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "D", "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, "D", "H", "W"])
    graph = helper.make_graph(nodes, "slow", [x], [y], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


MANIFEST = header(MODEL) + '''
[[labels]]
value = 1
name = "bright"
category = { value = "91723000", scheme = "SCT", meaning = "Anatomical Structure" }
type = { value = "44029006", scheme = "SCT", meaning = "Left lung" }

[[measurements]]
kind = "volume"

[[measurements]]
kind = "mean"

[[measurements]]
kind = "std"
'''


def models_dir(tmp_path: Path, emit: int = 0) -> Path:
    folder = tmp_path / "models" / MODEL
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.toml").write_text(MANIFEST)
    onnx.save(slow_graph(emit=emit), folder / "model.onnx")
    return folder.parent


def slow_node(tmp_path: Path, emit: int = 0, **workers: Any) -> NodeProcess:
    sections = {
        "completion": {"series_idle_seconds": 0.5, "study_idle_seconds": 0.5,
                       "check_interval_seconds": 0.1},
        "workers": {"models_dir": str(models_dir(tmp_path, emit)), **workers},
        "node": {"log_level": "INFO"},
    }
    routes = [{"name": "ct", "models": [MODEL], "match": {"Modality": "CT"}}]
    return NodeProcess(tmp_path / "node", sections, routes)


def series(tmp_path: Path, name: str, hu: float) -> list[Path]:
    return write_series(tmp_path / name, SMALL, hu, series_description=name)


def send(node: NodeProcess, files: list[Path]) -> str:
    result = storescu(node.port, files)
    assert result.returncode == 0, result.stderr
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


def job_of(node: NodeProcess, series_uid: str, timeout: float = 20.0) -> int:
    store = node.store()
    try:
        return node.wait_for(lambda: next((j.id for j in store.jobs(series_uid=series_uid)),
                                          None), timeout)
    finally:
        store.close()


def wait_state(node: NodeProcess, job_id: int, states: tuple[str, ...],
               timeout: float = 20.0) -> Any:
    store = node.store()
    try:
        return node.wait_for(lambda: (j := store.job(job_id)) and j.state in states and j,
                             timeout, interval=0.05)
    finally:
        store.close()


def post(port: int, path: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def rss_mb(node: NodeProcess) -> float:
    return status_mb(node, "VmRSS")


# -- in process: the terminate flag, checkpoints, the monitor ---------------------------------

def test_a_stopped_job_ends_its_onnx_run_within_milliseconds(tmp_path: Path) -> None:
    package = load_package(models_dir(tmp_path) / MODEL)
    loaded = SessionRegistry().get(package)
    fast = np.zeros((1, 1, 2, 4, 4), np.float32)
    control = JobControl(1)
    with control.active():
        assert loaded.run({"x": fast})[0].shape == (1, 2, 2, 4, 4)  # a short run is untouched
    took: list[float] = []
    for delay in (0.3, 1.0):
        control = JobControl(2)
        timer = threading.Timer(delay, control.stop, args=(CANCELLED,))
        start = time.monotonic()
        timer.start()
        with control.active(), pytest.raises(JobStoppedError) as stopped:
            loaded.run({"x": np.ones_like(fast)})
        end = time.monotonic()
        assert stopped.value.reason is CANCELLED
        assert control.stopped_at is not None and end - start >= delay
        took.append(end - control.stopped_at)
        with control.active(), pytest.raises(JobStoppedError):
            checkpoint()  # and the pipeline's next checkpoint ends the job
    print(f"terminate took {', '.join(f'{t * 1000:.1f} ms' for t in took)}")
    assert max(took) < 0.5, took
    checkpoint()  # outside a job: nothing to stop


def test_the_monitor_stops_the_youngest_job_once_over_the_memory_budget() -> None:
    rss = [100.0]
    monitor = JobMonitor(500, read_rss_mb=lambda: rss[0], interval_s=3600)
    old, young = JobControl(1, time_limit_s=60), JobControl(2)
    young.started = old.started + 1
    monitor.add(old)
    monitor.add(young)
    try:
        monitor.check()
        assert old.reason is None and young.reason is None
        rss[0] = 800.0
        monitor.check()
        assert young.reason is not None and young.reason.kind == StopKind.MEMORY
        assert young.reason.text == "memory budget of 500 MB exceeded (process at 800 MB)"
        monitor.check()  # the stopped job has not given its memory back yet: wait for it
        assert old.reason is None
        young.finished.set()
        monitor.remove(young)
        monitor.check()  # still over: the next job goes too
        assert old.reason is not None and old.reason.kind == StopKind.MEMORY
        fresh = JobControl(3, time_limit_s=2)
        monitor.check(now=fresh.started + 2.5)
        assert fresh.reason is None  # not watched yet
        monitor.add(fresh)
        rss[0] = 100.0
        monitor.check(now=fresh.started + 2.5)
        assert fresh.reason is not None and fresh.reason.text == "time limit of 2 s exceeded"
    finally:
        monitor.close()


def _one_job(tmp_path: Path) -> tuple[JobStore, int]:
    store = open_store(tmp_path / "radnode.db")
    series_uid = "1.2.3.4"
    store.record_instance(InstanceRecord("1.2.3.4.1", CT_IMAGE, series_uid, "1.2.3", "CT",
                                         "1.2.3/1.2.3.4/x.dcm", 10, "1.2.840.10008.1.2"))
    store.complete_series(store.series(series_uid), False, [NewJob("ct", MODEL)])
    return store, store.jobs(series_uid=series_uid)[0].id


@pytest.mark.parametrize("in_onnx", [False, True])
def test_shutdown_does_not_wait_for_a_step_that_cannot_be_interrupted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_onnx: bool) -> None:
    """A long step outside ONNX (or one long ONNX kernel) ignores the stop: Workers.stop gives
    up after its timeout. Inside ONNX the job is queued again; elsewhere it stays running, and
    start-up recovery queues it as an interrupted attempt (as after a crash)."""
    store, job_id = _one_job(tmp_path)
    release = threading.Event()

    def stuck(self: Workers, job: Any) -> Any:
        if in_onnx:
            with run_options():
                release.wait(10)
        else:
            release.wait(10)
        raise RuntimeError("released")

    monkeypatch.setattr(Workers, "_run", stuck)
    workers = Workers(store, tmp_path / "spool", tmp_path / "results", {}, SessionRegistry())
    workers.start()
    try:
        while (job := store.job(job_id)) is None or job.state != "running":
            time.sleep(0.02)
        start = time.monotonic()
        workers.stop(timeout=0.5)
        took = time.monotonic() - start
        assert took < 1.0, took
        job = store.job(job_id)
        assert job is not None
        if in_onnx:
            assert (job.state, job.attempts) == ("queued", 0)
        else:
            assert (job.state, job.attempts) == ("running", 1)
            assert store.recover_jobs(3) == RecoveredJobs(requeued=1, failed=0)
    finally:
        release.set()
        time.sleep(0.1)
        store.close()


# -- a real node --------------------------------------------------------------------------------

def test_a_job_over_its_time_limit_fails_and_the_next_one_runs(tmp_path: Path) -> None:
    node = slow_node(tmp_path, job_timeout_s=2).start()
    try:
        slow_uid = send(node, series(tmp_path, "slow", SLOW_HU))
        fast_uid = send(node, series(tmp_path, "fast", FAST_HU))
        slow, fast = job_of(node, slow_uid), job_of(node, fast_uid)
        failed = wait_state(node, slow, ("failed", "done"), timeout=30)
        assert failed.state == "failed" and failed.error == "time limit of 2 s exceeded"
        ran = failed.finished_at - failed.started_at
        assert 2.0 <= ran < 4.0, ran  # the limit, plus at most one monitor round and the stop
        done = wait_state(node, fast, ("failed", "done"), timeout=20)
        assert done.state == "done", done.error
        print(f"time limit 2 s: failed after {ran:.2f} s; next job done "
              f"{done.finished_at - failed.finished_at:.2f} s later")
        assert "time limit of 2 s exceeded" in node.log()
    finally:
        node.kill()


def test_a_job_over_the_memory_budget_fails_and_the_node_goes_on(tmp_path: Path) -> None:
    probe = slow_node(tmp_path, emit=EMIT_SLICES).start()  # how big an idle node is here
    idle = rss_mb(probe)
    probe.kill()
    budget = int(idle) + 300
    node = slow_node(tmp_path, emit=EMIT_SLICES, max_job_memory_mb=budget,
                     job_timeout_s=60).start()
    try:
        slow_uid = send(node, series(tmp_path, "slow", SLOW_HU))
        slow = job_of(node, slow_uid)
        failed = wait_state(node, slow, ("failed", "done"), timeout=30)
        assert failed.state == "failed"
        assert failed.error.startswith(f"memory budget of {budget} MB exceeded (process at ")
        peak = float(failed.error.rsplit("at ", 1)[1].split()[0])
        fast_uid = send(node, series(tmp_path, "fast", FAST_HU))
        done = wait_state(node, job_of(node, fast_uid), ("failed", "done"), timeout=20)
        assert done.state == "done", done.error  # the memory was given back
        after = rss_mb(node)
        print(f"idle {idle:.0f} MB, budget {budget} MB, seen at {peak:.0f} MB, failed after "
              f"{failed.finished_at - failed.started_at:.2f} s; {after:.0f} MB after")
        assert peak < budget + 400 and after < budget
    finally:
        node.kill()


def test_a_running_job_is_cancelled_over_http(tmp_path: Path) -> None:
    node = slow_node(tmp_path, job_timeout_s=600).start()
    try:
        slow = job_of(node, send(node, series(tmp_path, "slow", SLOW_HU)))
        queued = job_of(node, send(node, series(tmp_path, "slow2", SLOW_HU)))
        wait_state(node, slow, ("running",))
        time.sleep(0.5)  # inside the ONNX run
        start = time.monotonic()
        status, body = post(node.http_port, f"/api/jobs/{slow}/cancel")
        took = time.monotonic() - start
        assert status == 200, body
        assert body["job"]["state"] == "cancelled" and body["job"]["error"] == "cancelled"
        assert took < 3.0, took
        status, body = post(node.http_port, f"/api/jobs/{slow}/cancel")
        assert status == 409
        assert body["error"]["message"] == (
            f"job {slow} is cancelled; only queued or running jobs are cancelled")
        # the next job started; cancel it too, while it runs
        wait_state(node, queued, ("running",))
        status, body = post(node.http_port, f"/api/jobs/{queued}/cancel")
        assert status == 200 and body["job"]["state"] == "cancelled"
        print(f"cancel over HTTP answered in {took:.2f} s")
    finally:
        node.kill()


def test_sigterm_stops_the_node_in_time_and_the_job_runs_again(tmp_path: Path) -> None:
    node = slow_node(tmp_path, job_timeout_s=600).start()
    try:
        slow = job_of(node, send(node, series(tmp_path, "slow", SLOW_HU)))
        wait_state(node, slow, ("running",))
        time.sleep(0.5)  # inside the ONNX run
        assert node.proc is not None
        start = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        code = node.proc.wait(SHUTDOWN_TIMEOUT_S + 5)
        took = time.monotonic() - start
        assert code == 0, node.log()[-2000:]
        assert took < SHUTDOWN_TIMEOUT_S, took
        store = node.store()
        job = store.job(slow)
        store.close()
        assert job is not None and job.state == "queued" and job.error is None
        assert job.attempts == 0  # a shutdown is not an attempt
        assert "queued again (node stopping" in node.log()
        node.start()
        again = wait_state(node, slow, ("running",))
        assert again.attempts == 1
        print(f"SIGTERM with a running job: exited in {took:.2f} s; the job runs again")
    finally:
        node.kill()
