"""The contract of the job store protocol: every engine passes this suite (see conftest.ENGINES).

Each test names the operation it holds to its promise; times are given explicitly (``now``), so
the suite does not depend on the clock.
"""

from __future__ import annotations

import inspect
import threading
from collections import Counter
from collections.abc import Callable

import pytest

from node.store import (
    InstanceRecord,
    JobRow,
    JobState,
    JobStore,
    NewJob,
    NewOutboxItem,
    NewStudyJob,
    OutboxState,
    Recorded,
    RecoveredJobs,
    SeriesState,
    StudyState,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
EXPLICIT = "1.2.840.10008.1.2.1"
T0 = 1_000_000.0

Opener = Callable[[], JobStore]  # the ``engine`` fixture: a new handle on the same store


def inst(n: int, series: str = "1.2.3.1", study: str = "1.2.3", *, path: str | None = None,
         calling_ae: str = "MODALITY", size: int = 100) -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=f"{series}.{n}", sop_class_uid=CT, series_uid=series, study_uid=study,
        modality="CT", path=path or f"{study}/{series}/{n}.dcm", size=size,
        transfer_syntax=EXPLICIT, calling_ae=calling_ae,
    )


def queue_job(store: JobStore, series: str = "1.2.3.1", model: str = "lung_ct",
              now: float = T0) -> JobRow:
    """A series with one instance, completed with one job; returns the job."""
    store.record_instance(inst(1, series), now=now)
    row = store.series(series)
    assert row is not None
    assert store.complete_series(row, False, [NewJob("ct", model)], now=now + 1) is not None
    (job,) = store.jobs(series_uid=series, state=JobState.QUEUED)
    return job


def item(n: int, destination: str = "pacs", path: str | None = None) -> NewOutboxItem:
    return NewOutboxItem(destination, path or f"results/{n}.dcm", f"2.25.{n}", SEG)


# -- the protocol itself ----------------------------------------------------------------------

def test_the_engine_implements_every_operation_of_the_protocol(store: JobStore) -> None:
    assert isinstance(store, JobStore)
    members = {name for name in vars(JobStore) if not name.startswith("_")
               and callable(getattr(JobStore, name))}
    for name in members:
        want = inspect.signature(getattr(JobStore, name))
        have = inspect.signature(getattr(type(store), name))
        assert list(have.parameters) == list(want.parameters), name
        for p in want.parameters.values():
            assert have.parameters[p.name].default == p.default, (name, p.name)
            assert have.parameters[p.name].kind == p.kind, (name, p.name)
    public = {name for name in vars(type(store)) if not name.startswith("_")
              and callable(getattr(type(store), name))}
    assert public <= members, f"operations outside the protocol: {public - members}"


# -- instances --------------------------------------------------------------------------------

def test_record_instance_opens_its_series_and_study(store: JobStore) -> None:
    assert store.record_instance(inst(1), now=T0) is Recorded.NEW
    assert store.has_instance("1.2.3.1.1") and not store.has_instance("1.2.3.1.2")
    assert store.instance("1.2.3.1.1") == inst(1)
    assert store.instance("9.9") is None
    series = store.series("1.2.3.1")
    assert series is not None
    assert (series.study_uid, series.modality, series.calling_ae, series.state,
            series.opened_at, series.last_received, series.completed_at, series.forced,
            series.generation, series.instance_count) == (
        "1.2.3", "CT", "MODALITY", SeriesState.RECEIVING, T0, T0, None, False, 0, 1)
    assert isinstance(series.state, SeriesState)
    study = store.study("1.2.3")
    assert study is not None
    assert (study.state, study.opened_at, study.last_received, study.completed_at,
            study.forced, study.generation) == (StudyState.RECEIVING, T0, T0, None, False, 0)
    assert store.series("9.9") is None and store.study("9.9") is None


def test_a_second_instance_updates_its_series_and_study(store: JobStore) -> None:
    store.record_instance(inst(1), now=T0)
    assert store.record_instance(inst(2), now=T0 + 5) is Recorded.NEW
    series = store.series("1.2.3.1")
    study = store.study("1.2.3")
    assert series is not None and study is not None
    assert (series.opened_at, series.last_received, series.instance_count) == (T0, T0 + 5, 2)
    assert (study.opened_at, study.last_received) == (T0, T0 + 5)


def test_the_same_instance_twice_is_a_duplicate_and_changes_nothing(store: JobStore) -> None:
    store.record_instance(inst(1), now=T0)
    again = inst(1, path="elsewhere.dcm", size=5)
    assert store.record_instance(again, now=T0 + 5) is Recorded.DUPLICATE
    assert store.instance("1.2.3.1.1") == inst(1)
    series = store.series("1.2.3.1")
    assert series is not None and (series.last_received, series.instance_count) == (T0, 1)
    assert store.count_instances() == 1


def _complete(store: JobStore, series_uid: str = "1.2.3.1", study_uid: str = "1.2.3",
              now: float = T0 + 100) -> None:
    series = store.series(series_uid)
    assert series is not None
    assert store.complete_series(series, False, [], now=now) is not None
    study = store.study(study_uid)
    assert study is not None
    assert store.complete_study(study, False, [], now=now)


def test_a_late_instance_reopens_its_series_and_study_under_rerun(store: JobStore) -> None:
    store.record_instance(inst(1), now=T0)
    _complete(store)
    assert store.record_instance(inst(2), "rerun", now=T0 + 200) is Recorded.REOPENED
    series = store.series("1.2.3.1")
    study = store.study("1.2.3")
    assert series is not None and study is not None
    assert (series.state, series.opened_at, series.last_received, series.instance_count,
            series.generation) == (SeriesState.RECEIVING, T0 + 200, T0 + 200, 2, 1)
    assert (study.state, study.opened_at, study.last_received) == (
        StudyState.RECEIVING, T0 + 200, T0 + 200)


def test_a_late_instance_is_only_counted_under_ignore(store: JobStore) -> None:
    store.record_instance(inst(1), now=T0)
    _complete(store)
    assert store.record_instance(inst(2), "ignore", now=T0 + 200) is Recorded.LATE_IGNORED
    series = store.series("1.2.3.1")
    study = store.study("1.2.3")
    assert series is not None and study is not None
    assert (series.state, series.last_received, series.instance_count) == (
        SeriesState.COMPLETE, T0, 2)
    assert (study.state, study.last_received) == (StudyState.COMPLETE, T0)
    assert store.has_instance("1.2.3.1.2")


def test_instance_paths_come_in_arrival_order(store: JobStore) -> None:
    for n, name, at in ((1, "z", T0 + 9), (2, "a", T0 + 1), (3, "m", T0 + 5)):
        store.record_instance(inst(n, path=f"s/{name}.dcm"), now=at)
    store.record_instance(inst(1, "1.2.3.2", path="other/1.dcm"), now=T0)
    assert store.instance_paths("1.2.3.1") == ["s/z.dcm", "s/a.dcm", "s/m.dcm"]
    assert store.instance_paths("9.9") == []
    assert store.known_paths() == {"s/z.dcm", "s/a.dcm", "s/m.dcm", "other/1.dcm"}
    assert store.count_instances() == 4


def test_replace_instance_file_describes_the_new_file_at_the_same_path(store: JobStore) -> None:
    store.record_instance(inst(1), now=T0)
    newer = InstanceRecord("1.2.3.1.1", CT, "1.2.3.1", "1.2.3", "CT", inst(1).path, 999,
                           "1.2.840.10008.1.2", "OTHER")
    assert store.replace_instance_file(newer, now=T0 + 50)
    assert store.instance("1.2.3.1.1") == newer
    assert not store.replace_instance_file(inst(1, path="moved.dcm"), now=T0 + 60)
    assert not store.replace_instance_file(inst(7), now=T0 + 60)
    assert store.instance("1.2.3.1.1") == newer
    series = store.series("1.2.3.1")
    assert series is not None and (series.last_received, series.instance_count) == (T0, 1)


# -- series and studies -----------------------------------------------------------------------

def test_series_listings_are_oldest_first_and_filter_by_state(store: JobStore) -> None:
    store.record_instance(inst(1, "1.2.3.2"), now=T0 + 2)
    store.record_instance(inst(1, "1.2.3.1"), now=T0 + 1)
    store.record_instance(inst(1, "1.2.4.1", study="1.2.4"), now=T0 + 3)
    assert [s.series_uid for s in store.all_series()] == ["1.2.3.1", "1.2.3.2", "1.2.4.1"]
    assert [s.series_uid for s in store.study_series("1.2.3")] == ["1.2.3.1", "1.2.3.2"]
    assert store.study_series("9.9") == []
    series = store.series("1.2.3.2")
    assert series is not None and store.complete_series(series, False, [], now=T0 + 10) == 1
    assert [s.series_uid for s in store.all_series(SeriesState.RECEIVING)] == [
        "1.2.3.1", "1.2.4.1"]
    assert [s.series_uid for s in store.all_series(SeriesState.COMPLETE)] == ["1.2.3.2"]


def test_series_are_due_when_idle_or_open_too_long(store: JobStore) -> None:
    store.record_instance(inst(1, "1.1"), now=T0)  # idle since T0
    store.record_instance(inst(1, "1.2"), now=T0 + 50)  # recent
    store.record_instance(inst(1, "1.3"), now=T0 - 500)  # opened long ago...
    store.record_instance(inst(2, "1.3"), now=T0 + 55)  # ...still receiving
    due = store.series_due(T0 + 60, idle=30, max_wait=400)
    assert [s.series_uid for s in due] == ["1.3", "1.1"]
    assert store.series_due(T0 + 60, idle=100, max_wait=1000) == []
    series = store.series("1.1")
    assert series is not None and store.complete_series(series, False, [], now=T0 + 60)
    assert [s.series_uid for s in store.series_due(T0 + 60, 30, 400)] == ["1.3"]


def test_a_study_is_due_when_its_series_are_complete_and_it_is_idle(store: JobStore) -> None:
    store.record_instance(inst(1, "1.2.3.1"), now=T0)
    store.record_instance(inst(1, "1.2.3.2"), now=T0 + 1)
    assert store.studies_due(T0 + 100, idle=10, max_wait=1000) == []  # series receiving
    for uid in ("1.2.3.1", "1.2.3.2"):
        series = store.series(uid)
        assert series is not None and store.complete_series(series, False, [], now=T0 + 50)
    assert store.studies_due(T0 + 5, idle=10, max_wait=1000) == []  # not idle yet
    (due,) = store.studies_due(T0 + 100, idle=10, max_wait=1000)
    assert (due.study_uid, due.state) == ("1.2.3", StudyState.RECEIVING)


def test_a_study_open_too_long_is_due_whatever_its_series_do(store: JobStore) -> None:
    store.record_instance(inst(1, "1.2.3.1"), now=T0)
    store.record_instance(inst(2, "1.2.3.1"), now=T0 + 990)
    assert store.studies_due(T0 + 999, idle=10, max_wait=1000) == []
    assert [s.study_uid for s in store.studies_due(T0 + 1000, 10, 1000)] == ["1.2.3"]


def test_complete_series_queues_its_jobs_at_the_next_generation(store: JobStore) -> None:
    store.record_instance(inst(1), now=T0)
    series = store.series("1.2.3.1")
    assert series is not None
    jobs = [NewJob("ct", "lung_ct"), NewJob("ct", "bones")]
    assert store.complete_series(series, True, jobs, now=T0 + 30) == 1
    done = store.series("1.2.3.1")
    assert done is not None
    assert (done.state, done.completed_at, done.forced, done.generation) == (
        SeriesState.COMPLETE, T0 + 30, True, 1)
    queued = sorted(store.jobs(series_uid="1.2.3.1"), key=lambda j: j.model)
    assert [(j.model, j.route, j.generation, j.study_uid, j.state, j.created_at, j.attempts,
             j.started_at, j.finished_at, j.error, j.timings, j.result) for j in queued] == [
        ("bones", "ct", 1, "1.2.3", JobState.QUEUED, T0 + 30, 0, None, None, None, {}, None),
        ("lung_ct", "ct", 1, "1.2.3", JobState.QUEUED, T0 + 30, 0, None, None, None, {}, None),
    ]


def test_complete_series_is_refused_when_an_instance_came_since(store: JobStore) -> None:
    store.record_instance(inst(1), now=T0)
    read = store.series("1.2.3.1")
    assert read is not None
    store.record_instance(inst(2), now=T0 + 1)
    assert store.complete_series(read, False, [NewJob("ct", "lung_ct")], now=T0 + 30) is None
    series = store.series("1.2.3.1")
    assert series is not None and (series.state, series.generation) == (
        SeriesState.RECEIVING, 0)
    assert store.jobs() == []
    assert store.complete_series(series, False, [], now=T0 + 31) == 1
    assert store.complete_series(series, False, [], now=T0 + 32) is None  # complete already


def test_a_reopened_series_completes_at_a_new_generation(store: JobStore) -> None:
    job = queue_job(store)
    assert job.generation == 1
    store.record_instance(inst(2), now=T0 + 100)
    series = store.series("1.2.3.1")
    assert series is not None
    assert store.complete_series(series, False, [NewJob("ct", "lung_ct")], now=T0 + 200) == 2
    assert sorted(j.generation for j in store.jobs(series_uid="1.2.3.1")) == [1, 2]


def test_complete_study_queues_jobs_at_each_series_generation(store: JobStore) -> None:
    store.record_instance(inst(1, "1.2.3.1"), now=T0)
    store.record_instance(inst(1, "1.2.3.2"), now=T0)
    s1 = store.series("1.2.3.1")
    assert s1 is not None
    store.complete_series(s1, False, [NewJob("ct", "lung_ct")], now=T0 + 10)
    s2 = store.series("1.2.3.2")
    assert s2 is not None
    store.complete_series(s2, False, [], now=T0 + 10)
    study = store.study("1.2.3")
    assert study is not None
    jobs = [NewStudyJob("1.2.3.1", "ct", "lung_ct"),  # exists at generation 1: not again
            NewStudyJob("1.2.3.1", "study", "fusion"),
            NewStudyJob("1.2.3.2", "study", "fusion"),
            NewStudyJob("9.9.9", "study", "fusion")]  # no such series: nothing
    assert store.complete_study(study, True, jobs, now=T0 + 20)
    done = store.study("1.2.3")
    assert done is not None
    assert (done.state, done.completed_at, done.forced, done.generation) == (
        StudyState.COMPLETE, T0 + 20, True, 1)
    got = sorted((j.series_uid, j.route, j.model, j.generation) for j in store.jobs())
    assert got == [("1.2.3.1", "ct", "lung_ct", 1), ("1.2.3.1", "study", "fusion", 1),
                   ("1.2.3.2", "study", "fusion", 1)]


def test_complete_study_is_refused_when_an_instance_came_since(store: JobStore) -> None:
    store.record_instance(inst(1), now=T0)
    read = store.study("1.2.3")
    assert read is not None
    store.record_instance(inst(2), now=T0 + 1)
    assert not store.complete_study(read, False, [NewStudyJob("1.2.3.1", "s", "m")], T0 + 30)
    study = store.study("1.2.3")
    assert study is not None and study.state == StudyState.RECEIVING
    assert store.jobs() == []


# -- jobs -------------------------------------------------------------------------------------

def test_claim_takes_the_oldest_queued_job(store: JobStore) -> None:
    first = queue_job(store, "1.2.3.1")
    second = queue_job(store, "1.2.3.2")
    claimed = store.claim_job(now=T0 + 50)
    assert claimed is not None and claimed.id == first.id
    assert (claimed.state, claimed.started_at, claimed.attempts, claimed.finished_at,
            claimed.error) == (JobState.RUNNING, T0 + 50, 1, None, None)
    assert store.job(first.id) == claimed
    again = store.claim_job(now=T0 + 51)
    assert again is not None and again.id == second.id
    assert store.claim_job(now=T0 + 52) is None


def test_each_queued_job_is_claimed_once_across_threads_and_handles(engine: Opener) -> None:
    setup = engine()
    total = 60
    for n in range(total):
        queue_job(setup, f"1.2.3.{n}")
    shared = engine()
    handles = [engine(), engine(), engine(), shared, shared]  # other processes; threads of one
    claims: list[list[int]] = [[] for _ in handles]
    start = threading.Barrier(len(handles))

    def worker(k: int) -> None:
        start.wait()
        while (job := handles[k].claim_job()) is not None:
            claims[k].append(job.id)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(handles))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids = [i for c in claims for i in c]
    assert sorted(ids) == sorted(j.id for j in setup.jobs())
    assert len(ids) == len(set(ids)) == total
    assert setup.count_jobs() == {JobState.RUNNING: total}


def test_finish_job_records_the_outcome_and_queues_its_results(store: JobStore) -> None:
    job = queue_job(store)
    store.claim_job(now=T0 + 10)
    timings = {"load": 0.5, "infer": 1.25}
    result = {"labels": [1, 2], "volume_ml": {"lung": 4200.5}}
    store.finish_job(job.id, JobState.DONE, timings=timings, result=result,
                     outbox=[item(1), item(1, "archive")], now=T0 + 20)
    done = store.job(job.id)
    assert done is not None
    assert (done.state, done.finished_at, done.error, done.timings, done.result) == (
        JobState.DONE, T0 + 20, None, timings, result)
    items = sorted(store.outbox_items(), key=lambda i: i.destination)
    assert [(i.destination, i.job_id, i.path, i.sop_instance_uid, i.sop_class_uid, i.state,
             i.attempts, i.next_attempt_at, i.created_at, i.sent_at, i.last_error)
            for i in items] == [
        ("archive", job.id, "results/1.dcm", "2.25.1", SEG, OutboxState.PENDING, 0, T0 + 20,
         T0 + 20, None, None),
        ("pacs", job.id, "results/1.dcm", "2.25.1", SEG, OutboxState.PENDING, 0, T0 + 20,
         T0 + 20, None, None),
    ]


def test_finish_job_as_failed_keeps_the_reason(store: JobStore) -> None:
    job = queue_job(store)
    store.claim_job(now=T0 + 10)
    store.finish_job(job.id, JobState.FAILED, error="no lungs in the field of view",
                     now=T0 + 11)
    failed = store.job(job.id)
    assert failed is not None
    assert (failed.state, failed.error, failed.timings, failed.result, failed.finished_at) == (
        JobState.FAILED, "no lungs in the field of view", {}, None, T0 + 11)
    assert store.outbox_items() == []


def test_recover_jobs_queues_interrupted_jobs_or_fails_those_tried_too_often(
        store: JobStore) -> None:
    often = queue_job(store, "1.1")
    once = queue_job(store, "1.2")
    store.claim_job(now=T0 + 1)  # often, attempt 1: a crash
    assert store.recover_jobs(5, now=T0 + 2) == RecoveredJobs(requeued=1, failed=0)
    back = store.job(often.id)
    assert back is not None and (back.state, back.started_at, back.attempts) == (
        JobState.QUEUED, None, 1)
    store.claim_job(now=T0 + 3)  # often, attempt 2
    store.claim_job(now=T0 + 3)  # once, attempt 1
    untouched = queue_job(store, "1.3")
    assert store.recover_jobs(2, now=T0 + 4) == RecoveredJobs(requeued=1, failed=1)
    failed = store.job(often.id)
    assert failed is not None
    assert (failed.state, failed.error, failed.finished_at, failed.attempts) == (
        JobState.FAILED, "interrupted 2 times (crash or kill)", T0 + 4, 2)
    requeued = store.job(once.id)
    assert requeued is not None and (requeued.state, requeued.started_at, requeued.attempts,
                                     requeued.error) == (JobState.QUEUED, None, 1, None)
    assert store.job(untouched.id) == untouched
    assert store.recover_jobs(2, now=T0 + 5) == RecoveredJobs(requeued=0, failed=0)


def test_requeue_job_gives_a_running_job_back_without_the_attempt(store: JobStore) -> None:
    job = queue_job(store)
    assert not store.requeue_job(job.id)  # queued, not running
    store.claim_job(now=T0 + 10)
    assert store.requeue_job(job.id)
    back = store.job(job.id)
    assert back is not None and (back.state, back.attempts, back.started_at) == (
        JobState.QUEUED, 0, None)
    assert not store.requeue_job(job.id)
    assert not store.requeue_job(12345)


def test_retry_job_queues_failed_and_cancelled_jobs_afresh(store: JobStore) -> None:
    job = queue_job(store, "1.1")
    assert not store.retry_job(job.id)  # queued
    store.claim_job(now=T0 + 10)
    assert not store.retry_job(job.id)  # running
    store.finish_job(job.id, JobState.FAILED, error="boom", now=T0 + 11)
    assert store.retry_job(job.id)
    again = store.job(job.id)
    assert again is not None and (again.state, again.attempts, again.error) == (
        JobState.QUEUED, 0, None)
    claimed = store.claim_job(now=T0 + 20)
    assert claimed is not None and (claimed.attempts, claimed.finished_at) == (1, None)
    store.finish_job(job.id, JobState.DONE, now=T0 + 21)
    assert not store.retry_job(job.id)  # done
    other = queue_job(store, "1.2")
    assert store.cancel_job(other.id, now=T0 + 30)
    assert store.retry_job(other.id)
    assert not store.retry_job(12345)


def test_cancel_job_takes_only_a_queued_job_off_the_queue(store: JobStore) -> None:
    job = queue_job(store, "1.1")
    assert store.cancel_job(job.id, now=T0 + 5)
    cancelled = store.job(job.id)
    assert cancelled is not None and (cancelled.state, cancelled.finished_at) == (
        JobState.CANCELLED, T0 + 5)
    assert not store.cancel_job(job.id)
    running = queue_job(store, "1.2")
    store.claim_job(now=T0 + 10)
    assert not store.cancel_job(running.id)
    assert store.claim_job(now=T0 + 11) is None  # a cancelled job is never claimed
    assert not store.cancel_job(12345)


def test_jobs_are_listed_newest_first_filtered_and_counted(store: JobStore) -> None:
    ids = [queue_job(store, f"1.{n}").id for n in range(4)]
    assert [j.id for j in store.jobs()] == ids[::-1]
    assert [j.id for j in store.jobs(limit=2)] == ids[:1:-1]
    store.claim_job(now=T0 + 10)
    assert [j.id for j in store.jobs(state=JobState.RUNNING)] == ids[:1]
    assert [j.id for j in store.jobs(state=JobState.QUEUED, series_uid="1.2")] == [ids[2]]
    assert store.jobs(state=JobState.RUNNING, series_uid="1.2") == []
    assert store.job(12345) is None
    counts = store.count_jobs()
    assert counts == {"queued": 3, "running": 1}
    assert all(isinstance(k, JobState) for k in counts)
    assert isinstance(store.jobs()[0].state, JobState)


# -- outbox -----------------------------------------------------------------------------------

def test_due_items_come_earliest_first_up_to_the_limit(store: JobStore) -> None:
    store.enqueue([item(1)], now=T0 + 5)
    store.enqueue([item(2), item(3)], now=T0)
    store.enqueue([item(4)], now=T0 + 100)  # not due yet
    due = store.outbox_due(now=T0 + 10)
    assert [i.sop_instance_uid for i in due] == ["2.25.2", "2.25.3", "2.25.1"]
    assert [i.sop_instance_uid for i in store.outbox_due(T0 + 10, limit=2)] == [
        "2.25.2", "2.25.3"]
    assert all(i.job_id is None for i in due)


def test_an_object_queued_again_is_one_item_and_never_sent_twice(store: JobStore) -> None:
    store.enqueue([item(1), item(2), item(3)], now=T0)
    by_uid = {i.sop_instance_uid: i.id for i in store.outbox_items()}
    store.mark_sent(by_uid["2.25.1"], now=T0 + 1)
    store.mark_failed(by_uid["2.25.2"], "refused", T0 + 2, dead=True)
    store.enqueue([item(n, path=f"new/{n}.dcm") for n in (1, 2, 3)], now=T0 + 10)
    items = {i.sop_instance_uid: i for i in store.outbox_items()}
    assert len(items) == 3 and {i.id for i in items.values()} == set(by_uid.values())
    assert {uid: (i.state, i.path) for uid, i in items.items()} == {
        "2.25.1": (OutboxState.SENT, "new/1.dcm"),
        "2.25.2": (OutboxState.PENDING, "new/2.dcm"),
        "2.25.3": (OutboxState.PENDING, "new/3.dcm"),
    }
    store.enqueue([item(1, "archive")], now=T0 + 10)  # another destination: another item
    assert store.count_outbox() == {"sent": 1, "pending": 3}


def test_mark_sent_and_mark_failed_count_attempts(store: JobStore) -> None:
    store.enqueue([item(1), item(2)], now=T0)
    first, second = sorted(i.id for i in store.outbox_items())
    store.mark_failed(first, "timeout", T0 + 30, dead=False)
    failed = store.outbox_item(first)
    assert failed is not None
    assert (failed.state, failed.attempts, failed.last_error, failed.next_attempt_at) == (
        OutboxState.PENDING, 1, "timeout", T0 + 30)
    assert [i.id for i in store.outbox_due(T0 + 10)] == [second]
    store.mark_sent(first, now=T0 + 31)
    sent = store.outbox_item(first)
    assert sent is not None
    assert (sent.state, sent.attempts, sent.last_error, sent.sent_at) == (
        OutboxState.SENT, 2, None, T0 + 31)
    store.mark_failed(second, "refused", T0 + 40, dead=True)
    dead = store.outbox_item(second)
    assert dead is not None and (dead.state, dead.attempts, dead.last_error) == (
        OutboxState.DEAD, 1, "refused")
    assert store.outbox_due(T0 + 1000) == []
    assert store.outbox_item(12345) is None


def test_postpone_destination_holds_its_pending_items_only(store: JobStore) -> None:
    store.enqueue([item(1), item(2), item(3, "archive")], now=T0)
    ids = {(i.destination, i.sop_instance_uid): i.id for i in store.outbox_items()}
    store.mark_failed(ids[("pacs", "2.25.2")], "later", T0 + 500, dead=False)
    assert store.postpone_destination("pacs", T0 + 100, "association refused") == 2
    items = {(i.destination, i.sop_instance_uid): i for i in store.outbox_items()}
    assert (items[("pacs", "2.25.1")].next_attempt_at, items[("pacs", "2.25.1")].attempts,
            items[("pacs", "2.25.1")].last_error) == (T0 + 100, 0, "association refused")
    assert items[("pacs", "2.25.2")].next_attempt_at == T0 + 500  # never earlier
    assert items[("archive", "2.25.3")].next_attempt_at == T0
    assert items[("archive", "2.25.3")].last_error is None
    assert [i.destination for i in store.outbox_due(T0 + 50)] == ["archive"]
    assert store.postpone_destination("nowhere", T0, "x") == 0


def test_retry_dead_sends_dead_letters_again(store: JobStore) -> None:
    store.enqueue([item(1), item(2), item(3)], now=T0)
    ids = sorted(i.id for i in store.outbox_items())
    for item_id in ids:
        store.mark_failed(item_id, "refused", T0, dead=True)
    assert store.retry_dead(ids[0], now=T0 + 10) == 1
    assert store.retry_dead(ids[0], now=T0 + 10) == 0  # pending now
    one = store.outbox_item(ids[0])
    assert one is not None and (one.state, one.attempts, one.next_attempt_at) == (
        OutboxState.PENDING, 0, T0 + 10)
    assert store.retry_dead(now=T0 + 20) == 2
    assert store.count_outbox() == {"pending": 3}
    assert store.retry_dead(now=T0 + 30) == 0
    assert store.retry_dead(12345) == 0


def test_outbox_items_are_listed_newest_first_and_filtered(store: JobStore) -> None:
    store.enqueue([item(n) for n in range(4)], now=T0)
    ids = [i.id for i in store.outbox_items()]
    assert ids == sorted(ids, reverse=True) and len(ids) == 4
    assert [i.id for i in store.outbox_items(limit=2)] == ids[:2]
    store.mark_failed(ids[0], "refused", T0, dead=True)
    assert [i.id for i in store.outbox_items(state=OutboxState.DEAD)] == ids[:1]
    assert [i.id for i in store.outbox_items(state=OutboxState.PENDING)] == ids[1:]
    assert store.outbox_items(state=OutboxState.SENT) == []
    counts = store.count_outbox()
    assert counts == {"dead": 1, "pending": 3}
    assert all(isinstance(k, OutboxState) for k in counts)


# -- durability and sharing -------------------------------------------------------------------

def test_a_second_handle_sees_every_committed_change_and_a_reopened_store_keeps_it(
        engine: Opener) -> None:
    first = engine()
    job = queue_job(first)
    first.claim_job(now=T0 + 10)
    first.finish_job(job.id, JobState.DONE, timings={"x": 1.0}, outbox=[item(1)], now=T0 + 20)
    second = engine()
    assert second.job(job.id) == first.job(job.id)
    assert second.outbox_items() == first.outbox_items()
    assert second.all_series() == first.all_series()
    first.close()
    third = engine()
    assert Counter(j.state for j in third.jobs()) == Counter({JobState.DONE: 1})
    assert third.instance("1.2.3.1.1") == inst(1)


def test_states_are_their_strings(store: JobStore) -> None:
    job = queue_job(store)
    assert job.state == "queued" and f"{job.state}" == "queued"
    assert {s.value for s in JobState} == {"queued", "running", "done", "failed", "cancelled"}
    assert {s.value for s in OutboxState} == {"pending", "sent", "dead"}
    assert {s.value for s in SeriesState} == {"receiving", "complete"}


@pytest.mark.parametrize("late_policy", ["rerun", "ignore"])
def test_recording_the_same_instance_from_many_threads_records_it_once(
        engine: Opener, late_policy: str) -> None:
    handles = [engine() for _ in range(4)]
    start = threading.Barrier(len(handles))
    outcomes: list[Recorded] = []

    def record(k: int) -> None:
        start.wait()
        for n in range(20):
            outcomes.append(handles[k].record_instance(inst(n), late_policy, now=T0 + n))

    threads = [threading.Thread(target=record, args=(k,)) for k in range(len(handles))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert Counter(outcomes) == Counter({Recorded.NEW: 20, Recorded.DUPLICATE: 60})
    series = handles[0].series("1.2.3.1")
    assert series is not None and series.instance_count == 20
