"""Series and study completion on the real job store and spool, with explicit clocks."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from node.completion import CompletionScheduler
from node.config import CompletionConfig, RouteConfig
from node.receiver.spool import Spool
from node.routing.router import Router
from node.store import InstanceRecord, Recorded, open_store
from node.synthetic import SeriesGeometry, write_series

T0 = 1_000_000.0
CFG = CompletionConfig(series_idle_seconds=10, study_idle_seconds=30, max_wait_seconds=600)
ROUTES = [
    RouteConfig(name="ct", models=["lung_ct"], match={"Modality": "CT"}),
    RouteConfig(name="study-ct", models=["study_model"], match={"Modality": "CT"}, on="study"),
]


class Node:
    """The job store, spool and scheduler the service would build, driven by hand."""

    def __init__(self, root: Path, config: CompletionConfig = CFG,
                 routes: list[RouteConfig] = ROUTES) -> None:
        self.root = root
        self.store = open_store(root / "radnode.db")
        self.spool = Spool(root / "spool")
        self.scheduler = CompletionScheduler(self.store, self.spool.root, Router(routes), config)
        self.config = config

    def receive(self, path: Path, now: float, calling: str = "CT1") -> Recorded:
        ds = pydicom.dcmread(path)
        rel = Spool.relative_path(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        size = self.spool.write(rel, path.read_bytes())
        return self.store.record_instance(
            InstanceRecord(ds.SOPInstanceUID, ds.SOPClassUID, ds.SeriesInstanceUID,
                           ds.StudyInstanceUID, ds.Modality, rel, size, "1.2.840.10008.1.2.1",
                           calling),
            self.config.late_instance_policy, now=now,
        )

    def reopen(self) -> Node:
        self.store.close()
        return Node(self.root, self.config)


@pytest.fixture
def study(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    """One study with two CT series of 4 small slices each."""
    geometry = SeriesGeometry(rows=32, columns=32, slices=4)
    a = write_series(tmp_path / "a", geometry, study_uid="1.2.3.4", series_uid="1.2.3.4.1")
    b = write_series(tmp_path / "b", geometry, study_uid="1.2.3.4", series_uid="1.2.3.4.2")
    return a, b


def test_series_completes_after_idle_time_and_queues_jobs(tmp_path, study) -> None:
    a, _ = study
    node = Node(tmp_path / "n")
    for i, path in enumerate(a):
        assert node.receive(path, T0 + i) is Recorded.NEW
    node.scheduler.tick(T0 + 3 + 9.9)
    assert node.store.series("1.2.3.4.1").state == "receiving"
    node.scheduler.tick(T0 + 3 + 10)
    series = node.store.series("1.2.3.4.1")
    assert series.state == "complete" and series.generation == 1 and not series.forced
    jobs = node.store.jobs(series_uid="1.2.3.4.1")
    assert [(j.model, j.state, j.generation, j.route) for j in jobs] == [
        ("lung_ct", "queued", 1, "ct")]


def test_study_completes_when_all_series_complete_and_idle(tmp_path, study) -> None:
    a, b = study
    node = Node(tmp_path / "n")
    for path in a:
        node.receive(path, T0)
    for path in b:
        node.receive(path, T0 + 20)
    node.scheduler.tick(T0 + 15)  # series a complete, b still receiving
    assert node.store.study("1.2.3.4").state == "receiving"
    node.scheduler.tick(T0 + 20 + 10)  # b complete; study idle only 10 s
    assert node.store.study("1.2.3.4").state == "receiving"
    node.scheduler.tick(T0 + 20 + 30)
    assert node.store.study("1.2.3.4").state == "complete"
    study_jobs = [j for j in node.store.jobs() if j.model == "study_model"]
    assert sorted(j.series_uid for j in study_jobs) == ["1.2.3.4.1", "1.2.3.4.2"]


def test_hard_limit_forces_completion(tmp_path, study) -> None:
    a, _ = study
    node = Node(tmp_path / "n")
    t = T0
    for step in range(70):  # an instance every 9 s: never idle for 10 s
        node.receive(a[step % 4], t) if step < 4 else None
        if step >= 4:
            # keep the series busy: a duplicate does not count, so touch it with a new file
            ds = pydicom.dcmread(a[0])
            ds.SOPInstanceUID = f"1.2.3.4.1.{step}"
            extra = tmp_path / f"extra{step}.dcm"
            ds.save_as(extra)
            node.receive(extra, t)
        node.scheduler.tick(t)
        t += 9
        if node.store.series("1.2.3.4.1").state == "complete":
            break
    series = node.store.series("1.2.3.4.1")
    assert series.state == "complete" and series.forced
    assert T0 + 600 <= series.completed_at < T0 + 610


def test_late_instance_reopens_and_reruns(tmp_path, study) -> None:
    a, _ = study
    node = Node(tmp_path / "n")
    for path in a[:3]:
        node.receive(path, T0)
    node.scheduler.tick(T0 + 10)
    assert node.store.series("1.2.3.4.1").generation == 1
    assert node.receive(a[3], T0 + 100) is Recorded.REOPENED
    assert node.store.series("1.2.3.4.1").state == "receiving"
    assert node.store.study("1.2.3.4").state == "receiving"
    node.scheduler.tick(T0 + 110)
    series = node.store.series("1.2.3.4.1")
    assert series.state == "complete" and series.generation == 2 and series.instance_count == 4
    gens = sorted(j.generation for j in node.store.jobs(series_uid="1.2.3.4.1")
                  if j.model == "lung_ct")
    assert gens == [1, 2]


def test_late_instance_ignored_by_policy(tmp_path, study) -> None:
    a, _ = study
    config = CompletionConfig(series_idle_seconds=10, study_idle_seconds=30,
                              max_wait_seconds=600, late_instance_policy="ignore")
    node = Node(tmp_path / "n", config)
    for path in a[:3]:
        node.receive(path, T0)
    node.scheduler.tick(T0 + 10)
    assert node.receive(a[3], T0 + 100) is Recorded.LATE_IGNORED
    node.scheduler.tick(T0 + 200)
    series = node.store.series("1.2.3.4.1")
    assert series.state == "complete" and series.generation == 1 and series.instance_count == 4
    assert [j.generation for j in node.store.jobs(series_uid="1.2.3.4.1")
            if j.model == "lung_ct"] == [1]
    assert node.store.has_instance(pydicom.dcmread(a[3]).SOPInstanceUID)


def test_duplicates_do_not_reopen(tmp_path, study) -> None:
    a, _ = study
    node = Node(tmp_path / "n")
    for path in a:
        node.receive(path, T0)
    node.scheduler.tick(T0 + 10)
    assert node.receive(a[0], T0 + 100) is Recorded.DUPLICATE
    assert node.store.series("1.2.3.4.1").state == "complete"


def test_state_survives_a_restart(tmp_path, study) -> None:
    a, b = study
    node = Node(tmp_path / "n")
    for path in a:
        node.receive(path, T0)
    for path in b[:2]:
        node.receive(path, T0 + 5)
    node.scheduler.tick(T0 + 10)  # a complete, b receiving
    node = node.reopen()  # as after a restart: a new process, the same files
    assert node.store.series("1.2.3.4.1").state == "complete"
    assert node.store.series("1.2.3.4.2").state == "receiving"
    node.scheduler.tick(T0 + 15)
    assert node.store.series("1.2.3.4.2").state == "complete"
    assert len([j for j in node.store.jobs() if j.model == "lung_ct"]) == 2


def test_rules_see_series_facts(tmp_path, study) -> None:
    a, _ = study
    routes = [RouteConfig(name="big", models=["m"], match={"instances": {"min": 4},
                                                            "calling_ae_title": "CT1"})]
    node = Node(tmp_path / "n", routes=routes)
    for path in a[:3]:
        node.receive(path, T0)
    node.scheduler.tick(T0 + 10)
    assert node.store.jobs() == []  # 3 instances: no match
    for path in a:
        node.receive(path, T0 + 20)  # the 4th re-opens it
    node.scheduler.tick(T0 + 30)
    assert [j.model for j in node.store.jobs()] == ["m"]
